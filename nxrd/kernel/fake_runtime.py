"""An in-memory Runtime for unit tests: processes that exit when the test says so."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.kernel.runtime import Ended, Runtime, Started
from nxrd.model import paths
from nxrd.model.plan import WorkloadPlan
from nxrd.profile.model import Workload


@dataclass
class FakeProcess:
    name: str
    pid: int
    cgroup: str = ""
    ended: Ended | None = None
    signals: list[int] = field(default_factory=list)
    ignores_signals: bool = False


class FakeRuntime(Runtime):
    def __init__(
        self, state_dir: Path = Path("/nonexistent/nxr"), fs: CgroupFS | None = None
    ) -> None:
        self.state_dir = state_dir
        self.fs = fs  # where leaves appear and go, as LinuxRuntime makes and removes them
        self.next_pid = 1000
        self.procs: dict[str, FakeProcess] = {}  # the current process of each workload
        self.launches: list[str] = []
        self.cgroups: set[str] = set()
        self.oom: dict[str, int] = {}
        self.fail_launch: set[str] = set()
        self.ready_now: set[str] = set()
        self.checking: set[str] = set()  # workloads whose readiness check is under way
        self.published: dict[str, str] = {}  # workload -> its current CPUs line
        self.leftovers: set[str] = set()  # cgroups that still hold processes
        self.killed: list[str] = []
        self.slow_kill: dict[str, int] = {}
        self.frozen: dict[str, bool] = {}  # kills before a cgroup's leftovers are gone
        self.fronts: dict[str, str] = {}  # front -> the configuration written for it

    def publish_cpus(self, name: str, line: str) -> None:
        self.published[name] = line

    def log_file(self, name: str) -> Path:
        return paths.log_file(self.state_dir, name)

    def status_file(self, name: str) -> Path:
        return paths.status_file(self.state_dir, name)

    def ensure_cgroup(self, wl: WorkloadPlan) -> None:
        self.cgroups.add(wl.name)
        if self.fs is not None and not self.fs.exists(wl.cgroup):
            self.fs.mkdir(wl.cgroup)

    def launch(self, wl: WorkloadPlan, spec: Workload) -> Started:
        if wl.name in self.fail_launch:
            raise KernelError(f"cannot start {wl.name}: program {spec.command[0]!r} not found")
        if wl.front_config is not None:
            self.write_front(wl.name, wl.front_config)
        self.next_pid += 2
        self.procs[wl.name] = FakeProcess(wl.name, self.next_pid, wl.cgroup)
        self.launches.append(wl.name)
        return Started(self.next_pid, self.next_pid + 1)

    def write_front(self, name: str, config: str) -> Path:
        self.fronts[name] = config
        return paths.front_dir(self.state_dir, name)

    def front_config(self, name: str) -> str | None:
        return self.fronts.get(name)

    def ended(self, name: str, shim_pid: int) -> Ended | None:
        return self.procs[name].ended

    def signal(self, pid: int, sig: int) -> None:
        for p in self.procs.values():
            if p.pid == pid:
                p.signals.append(sig)
                # SIGUSR2 and SIGHUP ask for a reload (HAProxy's master, most servers)
                reload = sig in (signal.SIGUSR2, signal.SIGHUP)
                if not p.ignores_signals and not reload and p.ended is None:
                    p.ended = Ended(None, sig)

    def kill_all(self, wl: WorkloadPlan) -> None:
        self.killed.append(wl.name)
        self.slow_kill[wl.name] = self.slow_kill.get(wl.name, 0) - 1
        if self.slow_kill[wl.name] < 0:
            self.leftovers.discard(wl.name)
        p = self.procs.get(wl.name)
        if p is not None and p.ended is None:
            p.ended = Ended(None, 9)

    def populated(self, wl: WorkloadPlan) -> bool:
        p = self.procs.get(wl.name)
        return wl.name in self.leftovers or (p is not None and p.ended is None)

    def oom_kills(self, wl: WorkloadPlan) -> int:
        return self.oom.get(wl.name, 0)

    def freeze(self, wl: WorkloadPlan, frozen: bool) -> None:
        self.frozen[wl.name] = frozen
        if self.fs is not None and self.fs.exists(wl.cgroup):
            self.fs.write(wl.cgroup, "cgroup.freeze", "1" if frozen else "0")

    def remove_cgroup(self, wl: WorkloadPlan) -> None:
        self.cgroups.discard(wl.name)
        if self.fs is not None and self.fs.exists(wl.cgroup):
            self.fs.rmdir(wl.cgroup)

    def ready(self, wl: WorkloadPlan, pid: int, spec: Workload) -> bool | None:
        if spec.ready is None or wl.name in self.ready_now:
            return True
        return None if wl.name in self.checking else False

    # test helpers
    def exit(self, name: str, code: int | None = None, sig: int | None = None) -> None:
        self.procs[name].ended = Ended(code, sig)
