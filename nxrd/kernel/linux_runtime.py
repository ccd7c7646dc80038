"""The real Runtime: cgroupfs, the launcher's shims and their status files, probes."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import select
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.files import private_dir, shared_dir, write_atomically
from nxrd.front.render import bound
from nxrd.kernel import probes
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.kernel.launch import LaunchSpec, ids_of, launch, read_status
from nxrd.kernel.runtime import Ended, Runtime, Started
from nxrd.model import paths
from nxrd.model.classes import oom_score_adj
from nxrd.model.plan import DAEMON_LEAF, WorkloadPlan
from nxrd.model.topology import Gpu, device_minors
from nxrd.profile.model import Workload

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LinuxRuntime(Runtime):
    def __init__(
        self, fs: CgroupFS, state_dir: Path, journal: bool = False, gpus: Sequence[Gpu] = ()
    ) -> None:
        self.latency_socket: str | None = None  # told to workloads, for pushed latencies
        self.fs, self.state_dir, self.journal = fs, state_dir, journal
        # The host's GPUs (and MIG instances): UUID -> minor of its /dev/nvidiaN. Empty on
        # a host without GPUs, where leaves get no device filter at all.
        self.gpu_minors = device_minors(gpus)
        self.pidfds: dict[int, int] = {}  # shim pid -> pidfd, readable once the shim exits
        self.prober = probes.Prober()
        self.unreaped: set[int] = set()  # our shims that recorded an exit but had not exited

    def log_file(self, name: str) -> Path:
        return paths.log_file(self.state_dir, name)

    def status_file(self, name: str) -> Path:
        return paths.status_file(self.state_dir, name)

    def ensure_cgroup(self, wl: WorkloadPlan) -> None:
        if not self.fs.exists(wl.cgroup):
            self.fs.mkdir(wl.cgroup)
        for filename, value in wl.files.items():
            self.fs.write(wl.cgroup, filename, value)
        if self.gpu_minors:
            # Before launch, while the leaf is empty: a workload given no GPU is filtered
            # too (every /dev/nvidiaN denied), not only the ones given some.
            minors = [self.gpu_minors.get(g.uuid, g.index) for g in wl.gpus]
            try:
                self.fs.restrict_gpus(wl.cgroup, minors)
            except KernelError as e:
                raise KernelError(f"cannot start {wl.name}: {e}") from None

    def base_env(self, name: str, spec: Workload) -> dict[str, str]:
        """A clean environment: nothing of nxrd's own (NOTIFY_SOCKET, INVOCATION_ID...) leaks."""
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "NXR_WORKLOAD": name}
        if self.latency_socket is not None:
            env["NXR_LATENCY_SOCKET"] = self.latency_socket
        if self.cpus_dir is not None:
            env["NXR_CPUS_FILE"] = str(self.cpus_dir / name)
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        if spec.user is not None:
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(spec.user)
                env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        return env

    def env(self, wl: WorkloadPlan, spec: Workload) -> dict[str, str]:
        # The plan's variables win over the profile's env, which wins over the base.
        return {**self.base_env(wl.name, spec), **spec.env, **wl.env}

    def launch(self, wl: WorkloadPlan, spec: Workload) -> Started:
        env = self.env(wl, spec)
        cwd = spec.cwd
        if wl.front_config is not None:
            can_start_front(wl.name, wl.front_config, env["PATH"])
            cwd = str(self.write_front(wl.name, wl.front_config))
        launched = launch(
            LaunchSpec(
                name=wl.name,
                argv=spec.command,
                cgroup_dir=Path(self.fs.describe(wl.cgroup)),
                env=env,
                status_file=self.status_file(wl.name),
                log_file=self.log_file(wl.name),
                user=spec.user,
                group=spec.group,
                cwd=cwd,
                journal=self.journal,
                shim_cgroup=self.shim_cgroup(),
                oom_score_adj=oom_score_adj(wl.workload_class, spec.priority),
            )
        )
        self.watch(launched.shim_pid)
        return Started(launched.pid, launched.shim_pid)

    def write_front(self, name: str, config: str) -> Path:
        """A front's directory with its configuration, which HAProxy reads (and re-reads on
        a reload) from there; its runtime API socket appears beside it."""
        where = paths.front_dir(self.state_dir, name)
        private_dir(where.parent)
        private_dir(where)
        write_front_files(where, config)
        return where

    def front_config(self, name: str) -> str | None:
        try:
            return (paths.front_dir(self.state_dir, name) / paths.FRONT_CONFIG).read_text()
        except OSError:
            return None

    def shim_cgroup(self) -> Path | None:
        if not self.fs.exists(DAEMON_LEAF):
            return None  # a tree without nxrd's leaf (tests): the shim stays with nxrd
        return Path(self.fs.describe(DAEMON_LEAF))

    def publish_cpus(self, name: str, line: str) -> None:
        if self.cpus_dir is None:
            return
        # Best effort: it rides on cgroup writes (apply, the controller), which must not
        # fail because a hint file could not be written.
        with contextlib.suppress(OSError):
            shared_dir(self.cpus_dir)
            # readable by the workload, whatever its user
            write_atomically(self.cpus_dir / name, line, mode=0o644)

    def fds(self) -> list[int]:
        return list(self.pidfds.values())

    def watch(self, shim_pid: int) -> None:
        """Open a pidfd on a shim so the loop wakes when it exits (no PID-reuse races)."""
        if shim_pid not in self.pidfds:
            with contextlib.suppress(ProcessLookupError):
                self.pidfds[shim_pid] = os.pidfd_open(shim_pid)

    def _recorded_exit(self, name: str, shim_pid: int) -> Ended | None:
        status = read_status(self.status_file(name))
        # Only this shim's record counts: never a previous run's.
        if not status or status.get("shim_pid") != shim_pid:
            return None
        exit_ = status.get("exit")
        if not isinstance(exit_, dict):
            return None
        return Ended(exit_.get("code"), exit_.get("signal"))

    def ended(self, name: str, shim_pid: int) -> Ended | None:
        if shim_pid in self.pidfds:
            # The shim records the exit as its last act: while its pidfd is quiet there is
            # nothing to read. The loop asks every pass, so this keeps it off the disk.
            if self._alive(shim_pid):
                return None
            found = self._recorded_exit(name, shim_pid)
        else:
            # Without a pidfd a shim that is our unreaped child still answers kill(0):
            # its record is the only sign it is done.
            found = self._recorded_exit(name, shim_pid)
            if found is None and self._alive(shim_pid):
                return None
            if found is None:
                found = self._recorded_exit(name, shim_pid)  # written just before it exited
        self._forget(shim_pid)
        return found or Ended(None, None)

    def reap(self) -> None:
        """Collect shims that had recorded an exit but were still exiting when last seen."""
        for pid in list(self.unreaped):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.unreaped.discard(pid)

    def _alive(self, shim_pid: int) -> bool:
        fd = self.pidfds.get(shim_pid)
        if fd is not None:
            readable, _, _ = select.select([fd], [], [], 0)
            return not readable
        try:
            os.kill(shim_pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _forget(self, shim_pid: int) -> None:
        fd = self.pidfds.pop(shim_pid, None)
        if fd is not None:
            os.close(fd)
        # Reap it if it is our child (it is not after nxrd restarted); if it is still
        # between writing its record and exiting, reap() collects it later.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(shim_pid, os.WNOHANG)[0] == 0:
                self.unreaped.add(shim_pid)

    def signal(self, pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # the workload leads its own process group
        except ProcessLookupError:
            pass
        except PermissionError as e:
            raise KernelError(f"cannot signal process group {pid}: {e.strerror}") from None

    def kill_all(self, wl: WorkloadPlan) -> None:
        if self.fs.exists(wl.cgroup):
            self.fs.write(wl.cgroup, "cgroup.kill", "1")

    def freeze(self, wl: WorkloadPlan, frozen: bool) -> None:
        # Takes effect asynchronously: cgroup.events shows "frozen 1" once every task stopped.
        self.fs.write(wl.cgroup, "cgroup.freeze", "1" if frozen else "0")

    def populated(self, wl: WorkloadPlan) -> bool:
        if not self.fs.exists(wl.cgroup):
            return False
        return self.fs.read_keyed(wl.cgroup, "cgroup.events").get("populated") == "1"

    def oom_kills(self, wl: WorkloadPlan) -> int:
        if not self.fs.exists(wl.cgroup):
            return 0
        return int(self.fs.read_keyed(wl.cgroup, "memory.events").get("oom_kill", "0"))

    def remove_cgroup(self, wl: WorkloadPlan) -> None:
        if self.fs.exists(wl.cgroup):
            self.fs.rmdir_when_empty(wl.cgroup)

    def ready(self, wl: WorkloadPlan, pid: int, spec: Workload) -> bool | None:
        if spec.ready is None:
            return True
        whose = probes.NOBODY_ELSE
        if spec.ready.exec is not None:
            try:
                ids = ids_of(wl.name, spec.user, spec.group)
            except KernelError:
                return False  # its user is gone: it cannot pass as that user
            cgroup_dir = Path(self.fs.describe(wl.cgroup))
            whose = probes.Whose(cgroup_dir, self.env(wl, spec), ids, spec.cwd)
        return self.prober.ask(f"{wl.name}/{pid}", spec.ready, whose)


def write_front_files(where: Path, config: str) -> None:
    """What HAProxy reads in a front's directory: its configuration, and the map of held
    priorities, empty (nxrd fills it through the runtime API, and again after a reload)."""
    write_atomically(where / paths.FRONT_CONFIG, config)
    write_atomically(where / paths.FRONT_HELD, "")


def can_start_front(name: str, config: str, path: str) -> None:
    """What would make HAProxy exit at once, said as the reason the front cannot start."""
    if shutil.which("haproxy", path=path) is None:
        raise KernelError(
            f"cannot start {name}: haproxy is not installed (apt install haproxy: Debian's)"
        )
    try:
        pwd.getpwnam("haproxy")
    except KeyError:
        raise KernelError(
            f"cannot start {name}: no user haproxy, which its worker runs as (Debian's haproxy"
            " package creates it)"
        ) from None
    listens = bound(config)
    if listens is None:
        return
    address, port = listens
    with socket.socket() as s:  # serve.address is IPv4
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HAProxy binds
        try:
            s.bind((address, port))
        except OSError as e:
            why = "is in use by another program" if e.errno == errno.EADDRINUSE else e.strerror
            raise KernelError(
                f"cannot start {name}: {address}:{port} {why} (ss -ltnp 'sport = :{port}' "
                "names it); free it or choose another serve.port"
            ) from None
