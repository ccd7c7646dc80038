"""An in-memory Host for the unit tier: a captured topology, a fake cgroupfs, fake
processes, a clock the test moves, users and groups it declares, and what nxrd told
systemd recorded instead of sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nxrd.errors import KernelError
from nxrd.front.admin import FrontAdmin, FrontError
from nxrd.kernel.block import Disk, Disks
from nxrd.kernel.cgroupfs import CgroupFS, FakeCgroupFS
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.kernel.gpu_usage import GpuAccounting
from nxrd.kernel.host import Counters, Host, Listening
from nxrd.kernel.housekeeping import SLICES, HostCpus
from nxrd.kernel.nvml_guard import Guard
from nxrd.kernel.requirements import NEEDED
from nxrd.kernel.runtime import Runtime
from nxrd.kernel.shaper import ClassStats, Marked, Shaped, Shaper
from nxrd.model.egress import DEFAULT, PARENT, Egress
from nxrd.model.topology import CgroupInfo, Gpu, Topology


class FakeFrontAdmin(FrontAdmin):
    """A front that records the runtime API commands it was sent (none while the host's
    fronts_up is False: not running)."""

    def __init__(self, host: FakeHost, path: Path) -> None:
        super().__init__(path)
        self.host = host

    def command(self, line: str) -> str:
        if not self.host.fronts_up:
            raise FrontError(f"front at {self.path}: Connection refused")
        self.host.front_commands.append((self.path.parent.name, line))
        if line == "show info":
            return f"Name: HAProxy\nPid: {self.host.front_workers.get(self.path.parent.name, 1)}\n"
        if line == "show stat":
            return self.host.front_stats.get(self.path.parent.name, "")
        return ""


class FakeShaper(Shaper):
    """Egress shaping kept in memory: the rules and trees as the kernel would list them
    (a rule's leaf is its path while that leaf is the one it was loaded for)."""

    def __init__(self, host: FakeHost) -> None:
        super().__init__()
        self.host = host
        self.rules: dict[str, tuple[str, int]] | None = None  # workload -> (leaf, mark)
        self.built: dict[str, dict[int, ClassStats]] = {}  # interface -> its tree
        self.loads = 0  # rule tables loaded
        self.builds = 0  # trees built
        self.retunes = 0  # classes changed in place
        self.missing: str | None = None  # what problem() says (no nft...)

    def problem(self, egress: Egress) -> str | None:
        return self.missing

    def build(self, egress: Egress) -> None:
        self.builds += 1
        for i in egress.interfaces:
            tree = {
                PARENT: ClassStats(i.link, i.link, 0, 0),
                DEFAULT: ClassStats(egress.default_rate(i.link), i.link, 0, 0),
            }
            tree |= {c.minor: ClassStats(c.rate, c.ceil, 0, 0) for c in egress.classes}
            self.built[i.name] = tree

    def retune(self, egress: Egress) -> None:
        self.retunes += 1
        for i in egress.interfaces:
            tree = self.built.setdefault(i.name, {})
            tree[DEFAULT] = ClassStats(egress.default_rate(i.link), i.link, 0, 0)
            for c in egress.classes:
                was = tree.get(c.minor, ClassStats(0, 0, 0, 0))
                tree[c.minor] = ClassStats(c.rate, c.ceil, was.sent, was.dropped)

    def mark(self, egress: Egress, paths: Mapping[str, str]) -> None:
        self.loads += 1
        self.rules = {
            c.workload: (paths[c.workload].strip("/"), c.mark)
            for c in egress.classes
            if c.workload in paths
        }

    def read(self, interfaces: list[str]) -> Shaped:
        rules = None
        if self.rules is not None:
            rules = [Marked(w, leaf, mark) for w, (leaf, mark) in self.rules.items()]
        return Shaped(rules, self.trees_of(interfaces))

    def trees(self, interfaces: list[str]) -> dict[str, dict[int, ClassStats] | None]:
        return self.trees_of(interfaces)

    def trees_of(self, interfaces: list[str]) -> dict[str, dict[int, ClassStats] | None]:
        return {name: self.built.get(name) for name in interfaces}

    def remove(self, interfaces: list[str]) -> None:
        self.rules = None
        for name in interfaces:
            self.built.pop(name, None)


# A host whose cgroup2 subtree nxrd may own: every controller, delegated by systemd.
USABLE = CgroupInfo(
    mount="/sys/fs/cgroup",
    own_path="/nxr.slice/nxrd.service",
    controllers=list(NEEDED),
    subtree_control=list(NEEDED),
    writable=True,
)


class FakeCounters:
    """Reads a leaf's files from the fake cgroupfs by the paths nxrd builds below its root."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.reads: list[str] = []

    def read(self, path: str) -> str | None:
        self.reads.append(path)
        root = str(self.host.root) + "/"
        if not path.startswith(root):
            return None
        rel, _, filename = path[len(root) :].rpartition("/")
        try:
            return self.host.fs.read(rel, filename)
        except KernelError:
            return None

    def forget_under(self, directory: str) -> None:
        return None

    def close(self) -> None:
        return None


class FakeListening:
    """The accept queues tests set in FakeHost.accept_queues."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def read(self, ports: Iterable[int]) -> dict[int, int]:
        return {p: self.host.accept_queues[p] for p in ports if p in self.host.accept_queues}

    def close(self) -> None:
        return None


class FakeHost(Host):
    def __init__(
        self,
        topology: Topology,
        *,
        nvml: Any = None,
        users: Mapping[str, int] | None = None,
        groups: Mapping[str, int] | None = None,
        members: Mapping[int, set[int]] | None = None,
        euid: int = 0,
    ) -> None:
        # Captured topologies may come from hosts without cgroup v2: this one has it.
        self.topology = topology.model_copy(update={"cgroup": USABLE})
        self.fs = FakeCgroupFS()
        self.root: Path = Path("/sys/fs/cgroup/nxr.slice/nxrd.service")
        self.proc_runtime: FakeRuntime | None = None
        self.now = 0.0  # both clocks; tests move it
        self.pid_cgroups: dict[int, str] = {}  # pid -> cgroup path (filesystem)
        self.open_pidfds: dict[int, int] = {}  # pidfd -> pid
        self.exited: set[int] = set()  # pids whose process has exited
        self.lookups: list[int] = []  # pids whose cgroup nxrd asked for (a /proc read each)
        self.statuses: dict[Path, dict[str, object]] = {}  # shim records by path
        self.users = dict(users or {})
        self.groups = dict(groups or {})
        self.members = {gid: set(uids) for gid, uids in (members or {}).items()}
        self._euid = euid
        self.notified: list[str] = []
        self.journaled: list[tuple[str, dict[str, Any]]] = []
        self.journald = False  # whether journal() offers a sender
        self.nvml = nvml
        self._next_fd = 10_000
        self.fronts_up = True  # whether fronts answer their runtime API
        self.front_commands: list[tuple[str, str]] = []  # (front, command) as sent
        self.front_workers: dict[str, int] = {}  # front -> its worker's pid (show info)
        self.front_stats: dict[str, str] = {}  # front -> what `show stat` answers (CSV)
        self.fake_shaper: FakeShaper | None = None  # one per host, as the kernel's tables
        self.fake_cpus = FakeHostCpus()
        self.fake_disks = FakeDisks()
        gib = 1 << 30  # /proc/meminfo, in bytes; tests set what the guard reads
        self.memory = {"MemTotal": 8 * gib, "MemAvailable": 6 * gib, "SwapTotal": 0}
        self.accept_queues: dict[int, int] = {}  # port -> connections waiting (tests set)
        self.dgram_qlen = 10  # net.unix.max_dgram_qlen: the kernel's default, without systemd

    def front(self, socket_path: Path) -> FrontAdmin:
        return FakeFrontAdmin(self, socket_path)

    def host_cpus(self) -> HostCpus:
        return self.fake_cpus

    def disks(self) -> Disks:
        return self.fake_disks

    def meminfo(self) -> dict[str, int]:
        return dict(self.memory)

    def datagram_queue(self, at_least: int) -> int | None:
        was, self.dgram_qlen = self.dgram_qlen, max(self.dgram_qlen, at_least)
        return was if was < at_least else None

    def shaper(self) -> Shaper:
        if self.fake_shaper is None:
            self.fake_shaper = FakeShaper(self)
        return self.fake_shaper

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def discover(self, subtree: str | None) -> Topology:
        return self.topology

    def take_subtree(self, root: Path) -> CgroupFS:
        from nxrd.kernel.subtree import prepare

        self.root = root
        prepare(self.fs, 1)
        return self.fs

    def counters(self) -> Counters:
        return FakeCounters(self)

    def listening(self) -> Listening:
        return FakeListening(self)

    def runtime(self, fs: CgroupFS, state_dir: Path, journal: bool, gpus: Sequence[Gpu]) -> Runtime:
        self.proc_runtime = FakeRuntime(state_dir, fs)
        return self.proc_runtime

    def read_status(self, path: Path) -> dict[str, object] | None:
        return self.statuses.get(path)

    def cgroup_of(self, pid: int) -> str | None:
        self.lookups.append(pid)
        return self._where(pid)

    def _where(self, pid: int) -> str | None:
        """A process the test placed (spawned), else a fake workload's main process."""
        if pid in self.exited:
            return None
        if pid in self.pid_cgroups:
            return self.pid_cgroups[pid]
        for p in self.proc_runtime.procs.values() if self.proc_runtime else ():
            if p.pid == pid and p.ended is None:
                return f"{self.root}/{p.cgroup}"
        return None

    def hold(self, pid: int) -> int | None:
        if self._where(pid) is None:
            return None
        self._next_fd += 1
        self.open_pidfds[self._next_fd] = pid
        return self._next_fd

    def gone(self, fd: int) -> bool:
        return self._where(self.open_pidfds[fd]) is None

    def release(self, fd: int) -> None:
        self.open_pidfds.pop(fd, None)

    def uid_of(self, user: str) -> int | None:
        return self.users.get(user)

    def gid_of(self, group: str) -> int | None:
        return self.groups.get(group)

    def in_group(self, uid: int, primary_gid: int, gid: int) -> bool:
        return primary_gid == gid or uid in self.members.get(gid, set())

    def euid(self) -> int:
        return self._euid

    def notify(self, message: str) -> None:
        self.notified.append(message)

    def journal(self) -> Callable[..., None] | None:
        if not self.journald:
            return None

        def send(message: str, **fields: Any) -> None:
            self.journaled.append((message, fields))

        return send

    def gpu_accounting(self, gpus: Sequence[Gpu]) -> GpuAccounting:
        return GpuAccounting(gpus, Guard(timeout=0.05), self.nvml)

    # -- test helpers
    def spawned(self, pid: int, cgroup: str) -> None:
        """A process appears in cgroup (a path below nxrd's root)."""
        self.pid_cgroups[pid] = f"{self.root}/{cgroup}"
        self.exited.discard(pid)

    def exit(self, pid: int) -> None:
        self.exited.add(pid)


class FakeHostCpus(HostCpus):
    """The machine outside nxr in memory: slices' AllowedCPUs, interrupts (those in
    `fixed` refuse to move, as per-CPU ones do), the two masks, an irqbalance."""

    def __init__(self, systemd: bool = True, cpus: int = 2) -> None:
        self.has_systemd = systemd
        every = f"0-{cpus - 1}"
        self.allowed: dict[str, str] = dict.fromkeys(SLICES, "")
        self.own: str | None = None  # the service nxrd runs in (own_unit)
        self.irq: dict[str, str] = {"1": every, "9": "0", "24": every}
        self.fixed: set[str] = {"24"}
        self.masks = {"default_irq": f"{(1 << cpus) - 1:x}", "workqueue": f"{(1 << cpus) - 1:x}"}
        self.balancer: Path | None = None
        self.banned: list[str | None] = []  # what irqbalance was told, in order
        self.others: dict[str, Any] = {  # what explain finds on exclusive cores
            "processes": 0,
            "named": [],
            "kernel_threads": 0,
            "interrupts": [],
        }

    def systemd(self) -> bool:
        return self.has_systemd

    def own_unit(self) -> str | None:
        return self.own

    def allowed_cpus(self, unit: str) -> str:
        return self.allowed[unit]

    def set_allowed_cpus(self, unit: str, cpus: str) -> None:
        self.allowed[unit] = cpus

    def irqs(self) -> dict[str, str]:
        return dict(self.irq)

    def set_irq(self, irq: str, cpus: str) -> None:
        if irq in self.fixed or irq not in self.irq:
            raise KernelError(f"/proc/irq/{irq}/smp_affinity_list: the kernel keeps it there")
        self.irq[irq] = cpus

    def default_irq_mask(self) -> str | None:
        return self.masks["default_irq"]

    def set_default_irq_mask(self, mask: str) -> None:
        self.masks["default_irq"] = mask

    def workqueue_mask(self) -> str | None:
        return self.masks["workqueue"]

    def set_workqueue_mask(self, mask: str) -> None:
        self.masks["workqueue"] = mask

    def irqbalance(self) -> Path | None:
        return self.balancer

    def ban_from_irqbalance(self, sock: Path, cpus: str | None) -> None:
        self.banned.append(cpus)

    def others_on(self, cores: frozenset[int], own: str) -> dict[str, Any]:
        return self.others


class FakeDisks(Disks):
    """Disks in memory: io.cost per device as the root's io.cost.qos would show it."""

    def __init__(self, disks: list[Disk] | None = None) -> None:
        self.disks = disks if disks is not None else [Disk("vda", "254:0", "mq-deadline", False)]

    def list(self) -> list[Disk]:
        return list(self.disks)

    def set_iocost(self, devno: str, enable: bool) -> None:
        self.disks = [replace(d, iocost=enable) if d.devno == devno else d for d in self.disks]
