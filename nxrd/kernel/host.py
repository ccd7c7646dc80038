"""The Host: everything the daemon asks of the machine, as one interface.

Cgroup files, counters read every tick, which workload a PID belongs to, pidfds, users and
groups, systemd's notify socket and journal, NVML and the clock. LinuxHost is the real
machine; FakeHost (kernel/fake_host.py) is an in-memory one for the unit tier. Nothing
outside nxrd/kernel opens /sys, /proc or /dev, calls hold, looks users up or talks to
systemd: it asks a Host.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import select
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from nxrd.front.admin import FrontAdmin
from nxrd.kernel.block import Disks
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.kernel.counters import KeptOpen
from nxrd.kernel.gpu_usage import GpuAccounting
from nxrd.kernel.housekeeping import HostCpus
from nxrd.kernel.mps import MpsDaemons
from nxrd.kernel.runtime import Runtime
from nxrd.kernel.shaper import Shaper
from nxrd.model.topology import Gpu, Topology

JOURNAL_SOCKET = "/run/systemd/journal/socket"
CGROUP2_MOUNT = "/sys/fs/cgroup"


class Counters(Protocol):
    """Cgroup files read every tick by absolute path (None: the file is gone)."""

    def read(self, path: str) -> str | None: ...

    def forget_under(self, directory: str) -> None: ...

    def close(self) -> None: ...


class Listening(Protocol):
    """Connections waiting in listening sockets' accept queues, by port (kernel/listen.py)."""

    def read(self, ports: Iterable[int]) -> dict[int, int]: ...

    def close(self) -> None: ...


class Host(ABC):
    """What nxrd needs of the machine it runs on."""

    # -- the clock: wall time for records, monotonic time for timers
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    # -- cgroups
    @abstractmethod
    def discover(self, subtree: str | None) -> Topology:
        """The host's topology, with the reach of the cgroup nxrd owns (subtree)."""

    @abstractmethod
    def take_subtree(self, root: Path) -> CgroupFS:
        """Move nxrd into its own leaf of root and enable the controllers below it."""

    @abstractmethod
    def counters(self) -> Counters:
        """A reader of cgroup files kept open between ticks."""

    @abstractmethod
    def listening(self) -> Listening:
        """A reader of the accept queues of ports workloads listen on."""

    @abstractmethod
    def runtime(self, fs: CgroupFS, state_dir: Path, journal: bool, gpus: Sequence[Gpu]) -> Runtime:
        """What the supervisor starts, signals and watches workloads through."""

    @abstractmethod
    def read_status(self, path: Path) -> dict[str, object] | None:
        """A shim's record of the workload it runs (None: none, or unreadable)."""

    # -- processes
    @abstractmethod
    def cgroup_of(self, pid: int) -> str | None:
        """The cgroup holding pid, as a filesystem path (None: the process is gone)."""

    @abstractmethod
    def hold(self, pid: int) -> int | None:
        """A handle on pid (a pidfd) that tells later whether this very process still
        lives, whoever gets its PID next (None: the process is gone)."""

    @abstractmethod
    def gone(self, fd: int) -> bool:
        """Whether the process held by fd has exited."""

    @abstractmethod
    def release(self, fd: int) -> None:
        """Let go of a handle hold() gave."""

    # -- users and groups
    @abstractmethod
    def uid_of(self, user: str) -> int | None:
        """The UID of a user name (None: no such user here, or not a valid name)."""

    @abstractmethod
    def gid_of(self, group: str) -> int | None: ...

    @abstractmethod
    def in_group(self, uid: int, primary_gid: int, gid: int) -> bool:
        """Whether the user uid (whose primary group is primary_gid) is a member of gid."""

    def euid(self) -> int:
        return os.geteuid()

    # -- systemd
    @abstractmethod
    def notify(self, message: str) -> None:
        """sd_notify (READY=1, STATUS=..., WATCHDOG=1); nothing outside a Type=notify unit."""

    @abstractmethod
    def journal(self) -> Callable[..., None] | None:
        """journal.send when journald runs here, else None."""

    # -- GPUs
    @abstractmethod
    def gpu_accounting(self, gpus: Sequence[Gpu]) -> GpuAccounting:
        """An NVML reader of the GPUs' use (only asked for where GPUs were found)."""

    def mps(self, say: Callable[[str], None]) -> MpsDaemons:
        """MPS control daemons, one per GPU shared under MPS."""
        return MpsDaemons(say)

    def front(self, socket_path: Path) -> FrontAdmin:
        """The runtime API of the front whose stats socket is at socket_path."""
        return FrontAdmin(socket_path)

    def shaper(self) -> Shaper:
        """Egress shaping: nftables marks and HTB trees (docs/network.md)."""
        return Shaper()

    def host_cpus(self) -> HostCpus:
        """Where the rest of the machine runs: slices, interrupts, workqueues."""
        return HostCpus()

    @abstractmethod
    def meminfo(self) -> dict[str, int]:
        """The machine's /proc/meminfo, in bytes: MemTotal, MemAvailable, SwapFree..."""

    def disks(self) -> Disks:
        """Block devices, and whether I/O weights act on them."""
        return Disks()

    def datagram_queue(self, at_least: int) -> int | None:
        """Let unix datagram sockets made from now on queue at least this many; what the
        limit was when it was raised (None: nothing changed)."""
        return None


class LinuxHost(Host):
    """The real machine."""

    def __init__(self) -> None:
        self.mount = CGROUP2_MOUNT  # where discovery found the cgroup2 hierarchy

    def meminfo(self) -> dict[str, int]:
        from nxrd.kernel.discovery import meminfo

        return meminfo()

    def datagram_queue(self, at_least: int) -> int | None:
        from nxrd.kernel.dgram_queue import raise_to

        return raise_to(at_least)

    def discover(self, subtree: str | None) -> Topology:
        from nxrd.kernel.discovery import discover

        topology = discover(subtree=subtree)
        self.mount = (topology.cgroup.mount or CGROUP2_MOUNT).rstrip("/")
        return topology

    def take_subtree(self, root: Path) -> CgroupFS:
        from nxrd.kernel.subtree import take_subtree

        return take_subtree(root, self.cgroup_of(os.getpid()))

    def counters(self) -> Counters:
        return KeptOpen()

    def listening(self) -> Listening:
        from nxrd.kernel.listen import ListenQueues

        return ListenQueues()

    def runtime(self, fs: CgroupFS, state_dir: Path, journal: bool, gpus: Sequence[Gpu]) -> Runtime:
        from nxrd.kernel.linux_runtime import LinuxRuntime

        return LinuxRuntime(fs, state_dir, journal=journal, gpus=gpus)

    def read_status(self, path: Path) -> dict[str, object] | None:
        from nxrd.kernel.launch import read_status

        return read_status(path)

    def cgroup_of(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cgroup") as f:  # read for each latency report: no pathlib
                text = f.read()
        except OSError:
            return None
        # The cgroup2 line is "0::/path", relative to the cgroup2 mount; the only line on a
        # pure cgroup v2 host, the last beside v1 hierarchies (cgroup(7)).
        for line in text.splitlines():
            if line.startswith("0::"):
                return self.mount + line[3:]
        return None

    def hold(self, pid: int) -> int | None:
        try:
            return os.pidfd_open(pid)
        except OSError:
            return None

    def gone(self, fd: int) -> bool:
        # a pidfd turns readable once its process has exited
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    def release(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    def uid_of(self, user: str) -> int | None:
        try:
            return pwd.getpwnam(user).pw_uid
        except (KeyError, ValueError):  # ValueError: a name with a NUL
            return None

    def gid_of(self, group: str) -> int | None:
        try:
            return grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            return None

    def in_group(self, uid: int, primary_gid: int, gid: int) -> bool:
        if primary_gid == gid:
            return True
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        return gid in os.getgrouplist(name, primary_gid)

    def notify(self, message: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        from systemd import daemon

        with contextlib.suppress(OSError):
            daemon.notify(message)

    def journal(self) -> Callable[..., None] | None:
        if not os.path.exists(JOURNAL_SOCKET):
            return None
        from systemd import journal

        def send(message: str, **fields: Any) -> None:
            with contextlib.suppress(OSError):
                journal.send(message, **fields)

        return send

    def gpu_accounting(self, gpus: Sequence[Gpu]) -> GpuAccounting:
        return GpuAccounting(gpus)
