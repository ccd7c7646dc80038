"""Running nxrd: build the parts on a Host, own the subtree, apply the plan, adopt,
supervise, stop.

The loop is single-threaded: signal handlers only record the signal; the loop wakes on
them, on shim pidfds (a workload ended) and on the supervisor's next timer. Each job the
loop does has a module of its own beside this one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nxrd.api.handlers import Handlers
from nxrd.api.protocol import DEFAULT_SOCKET
from nxrd.api.server import Access, ApiServer
from nxrd.controller.loop import Controller
from nxrd.controller.push import PushReceiver
from nxrd.daemon import adopt, cpus, fronts, memory_guard, sinks, waiting
from nxrd.daemon.egress_sync import EgressSync, leaves
from nxrd.daemon.gpu_watch import GpuWatch
from nxrd.daemon.isolation import Isolation, inside
from nxrd.daemon.pids import PidIndex
from nxrd.daemon.readings import Readings
from nxrd.daemon.reconfigure import Reconfigurer, pushes, starting_files
from nxrd.daemon.view import View
from nxrd.errors import NxrError
from nxrd.files import private_dir, write_atomically
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.kernel.host import Host, LinuxHost
from nxrd.kernel.requirements import check, subtree_path, usable
from nxrd.ledger import Ledger
from nxrd.model.paths import DEFAULT_STATE_DIR
from nxrd.model.plan import Plan
from nxrd.profile.load import parse_profiles
from nxrd.profile.model import Profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from nxrd.api.metrics import MetricsServer


class Daemon:
    def __init__(
        self,
        profiles: list[str],
        state_dir: str = DEFAULT_STATE_DIR,
        cgroup_root: str | None = None,
        on_stop: str = "stop",
        socket_path: str = DEFAULT_SOCKET,
        api_group: str | None = "nxr",
        api_read: str = "group",
        host: Host | None = None,
    ) -> None:
        self.host = host or LinuxHost()
        self.socket_path = socket_path
        self.access = Access(api_group, api_read, self.host)
        self.state_dir = Path(state_dir)
        self.configured = profiles
        files, self.applied = starting_files(profiles, self.state_dir, self.state_file())
        self.waiting = not files and not self.applied  # for a profile and a reload
        self.profile, self.source = parse_profiles(self.applied or files)
        self.topology = self.host.discover(cgroup_root)
        self.shaper = self.host.shaper()
        self.gpus: GpuWatch | None = None
        self.reconf = Reconfigurer(self)
        self.view = View(self)
        self.plan = self.reconf.replan(self.profile, self.source, fresh=True)
        self.on_stop = on_stop
        reqs = check(self.topology.cgroup)
        if not usable(reqs):
            missing = "; ".join(f"{r.detail} ({r.fix})" for r in reqs if not r.ok)
            raise NxrError(f"refusing to start without isolation: {missing}")
        root = cgroup_root or subtree_path(self.topology.cgroup)
        assert root is not None
        self.root = Path(root)
        self.signals: list[int] = []
        self.last_sample = 0.0  # monotonic time of the last per-second pass
        self.saved = ""  # the state file's text as last written

    def start(self) -> Supervisor:
        """Own the subtree, write the plan's tree, adopt what a previous nxrd left running."""
        host = self.host
        began = host.monotonic()
        private_dir(self.state_dir)
        # The socket first: if it cannot be bound, no cgroup has been touched yet.
        self.api = ApiServer(self.socket_path, self.access, on_error=self._api_error)
        self.metrics: MetricsServer | None = None
        self.push: PushReceiver | None = None
        self.counters = host.counters()
        self.readings = Readings(self.counters, self.root, host.listening())
        self.pids = PidIndex(host, self.root)
        self.ledger = Ledger(host.time)
        # No GPUs found (no driver, no pynvml): no NVML session, no GPU figures, no errors.
        if self.topology.gpus:
            self.gpus = GpuWatch(host.gpu_accounting(self.topology.gpus))
        try:
            self.fs: CgroupFS = host.take_subtree(self.root)
            self.ledger.load(self.state_dir / "ledger.json")
            self.fs.on_write = self.ledger.record
            with self.ledger.because(f"profile {self.source}, at nxrd start"):
                self.apply(self.plan)  # all or nothing; live values for adopted too
            if self.profile.host.metrics:
                self.metrics = self.metrics_server(self.profile.host.metrics)
            self.push = self.latency_receiver() if pushes(self.profile) else None
        except NxrError:
            self.api.close()
            raise
        journal = host.journal()
        self.runtime = host.runtime(
            self.fs, self.state_dir, journal is not None, self.topology.gpus
        )
        self.events = EventLog()
        self.events.sinks.append(sinks.sink(journal))
        # before any workload starts: its exclusive cores are clear from the first
        tree = inside(self.root, self.topology.cgroup.mount)
        self.isolation = Isolation(host.host_cpus(), self.state_dir, tree, self.say, host.disks())
        self.isolation.apply(self.plan, self.profile)
        self.sup = Supervisor(self.profile, self.plan, self.runtime, self.events, host.time)
        self.memory_guard = memory_guard.MemoryGuard(self)
        self.rotation = fronts.Rotation(
            lambda: self.plan, self.sup, self.state_dir, host.front, self.say
        )
        self.events.sinks.append(self.rotation)
        leaf = leaves(self.fs, self.root, self.topology.cgroup.mount, lambda: self.plan)
        self.egress = EgressSync(lambda: self.plan, self.sup, self.shaper, leaf, self.say)
        self.events.sinks.append(self.egress)
        if self.push is not None:
            self.runtime.latency_socket = self.push.path
            if self.push.note:
                self.say(self.push.note)
        self.runtime.cpus_dir = Path(self.socket_path).parent / "cpus"
        cpus.follow(self)
        # Before any workload starts: MPS clients find their GPU's daemon from the first try.
        self.mps = host.mps(self.say)
        try:
            self.mps.ensure(self.plan.mps)
        except NxrError:
            self.api.close()
            raise
        self.controller = self.make_controller(self.profile, self.plan)
        if self.applied:
            self.say(f"using the profile applied by nxrctl ({self.source})")
        if self.waiting:
            self.say(f"no profile in {', '.join(self.configured)} yet: add one, then reload")
        for warning in self.plan.warnings:
            self.say(f"warning: {warning}")
        adopt.adopt(self, host.monotonic())
        if adopted := sum(r.pid is not None for r in self.sup.records.values()):
            took = (host.monotonic() - began) * 1000
            which = "workload" if adopted == 1 else "workloads"
            self.say(f"took over {adopted} running {which}; started in {took:.0f} ms")
        self.ledger.cause = "planned value, written when the workload started"
        docs = self.gpus.docs if self.gpus is not None else None
        view = (self.sup, self.plan, self.topology, self.access, self.view)
        self.api.handlers = Handlers(*view, gpus=docs)
        return self.sup

    # -- the parts, built on this host

    def apply(self, plan: Plan) -> None:
        apply_plan(plan, self.fs)

    def make_controller(self, profile: Profile, plan: Plan) -> Controller:
        return Controller(
            profile,
            plan,
            self.fs,
            self.sup,
            self.events,
            self.ledger,
            self.host.time,
            self.rotation.admit,
            self.egress.limit,
        )

    def latency_receiver(self) -> PushReceiver:
        path = str(Path(self.socket_path).parent / "latency.sock")
        return PushReceiver(path, self.workload_of_pid, self.host.datagram_queue)

    def metrics_server(self, address: str) -> MetricsServer:
        from nxrd.api.metrics import MetricsServer

        # The controller is replaced on apply: look it up at each scrape.
        gpus = self.gpus.docs if self.gpus is not None else list
        status = self.view.status_docs
        return MetricsServer(address, status, lambda: self.controller.summary(), gpus)

    def signals_of(self, names: list[str], now: float) -> dict[str, dict[str, float]]:
        """What each controller decision records as its inputs: the leaves' readings, the
        fronts' queues and refusals, and what shaped workloads send."""
        out = {**self.readings.tick(names, self.sup.records, now), **self.rotation.signals()}
        for name, sent in self.egress.signals().items():
            out[name] = {**out.get(name, {}), **sent}
        return out

    def workload_of_pid(self, pid: int) -> str | None:
        return self.pids.workload_of(pid, self.sup.records)

    def ensure_mps(self) -> None:
        try:
            self.mps.ensure(self.plan.mps)
        except NxrError as e:
            self.say(str(e))

    def say(self, message: str) -> None:
        """An event of nxrd itself (no workload state changes)."""
        self.events.record(self.host.time(), "nxrd", "-", "-", message)

    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _api_error(self, message: str) -> None:
        print(f"nxrd: {message}", file=sys.stderr, flush=True)

    # -- the loop

    def step(self, now: float, stopping: bool) -> None:
        """One pass of the loop, after its signals: supervise, control, sample, save."""
        if not stopping:  # before the supervisor starts anything: shaped from its first packet
            self.egress.step(now)
        self.sup.tick(now)
        if not stopping:
            self.memory_guard.step(now)
            self.rotation.step(now)
            self.controller.tick(now, lambda names: self.signals_of(names, now))
        if now - self.last_sample >= 1.0:
            self.pids.sweep(self.sup.records)
            self.readings.sample(self.sup.records, now)
            self.rotation.sample(now)
            self.egress.sample(now)
            self.ensure_mps()  # one that exited is started again
            if self.gpus is not None:
                self.gpus.poll(self, now)
            self.last_sample = now
        self._save()

    def _save(self) -> None:
        self.ledger.save(self.state_dir / "ledger.json")
        text = json.dumps({"workloads": self.sup.snapshot()}, sort_keys=True)
        if text != self.saved:
            write_atomically(self.state_file(), text)
            self.saved = text

    def loop(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code."""
        host = self.host
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)  # signals are caught from before start(): command.py
        stopping = False
        watchdog = int(os.environ.get("WATCHDOG_USEC", "0") or 0) / 2e6  # ping at half the limit
        last_ping = 0.0
        status = ""
        host.notify("READY=1")
        while True:
            now = host.monotonic()
            if watchdog and now - last_ping >= watchdog:
                host.notify("WATCHDOG=1")
                last_ping = now
            # Swap, not iterate-then-clear: a signal landing in between is not lost.
            pending, self.signals = self.signals, []
            for got in pending:
                if got == signal.SIGHUP:
                    self.reconf.reload_on_signal()
                elif not stopping:
                    stopping = True
                    host.notify("STOPPING=1")
                    # Workloads left running keep no cap or freeze nobody will lift.
                    self.controller.release(now, "nxrd exiting")
                    if self.on_stop == "leave":
                        self._save()
                        self.close(leave=True)
                        return 0
                    self.sup.stop_all(now)
            self.step(now, stopping)
            summary = self.view.summary()  # after the tick: what systemctl shows is current
            if summary != status:
                host.notify(f"STATUS={summary}")
                status = summary
            if stopping and self.sup.all_stopped():
                self.close()
                return 0
            waiting.wait(self, waiting.poll_set(self, wake_r, now), wake_r, now)

    def close(self, leave: bool = False) -> None:
        if not leave:  # left-running workloads keep their MPS server (adopted next start)
            self.mps.close()
            # and their shaping; once they are stopped, nothing is left to shape
            self.egress.try_(self.egress.remove, "egress shaping not removed")
        self.isolation.restore()  # the machine gets its cores back, even when left running
        for part in (self.api, self.readings, self.pids, self.controller, self.push, self.metrics):
            if part is not None:
                part.close()
