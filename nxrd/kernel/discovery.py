"""Host discovery from sysfs, procfs and NVML, returned as plain Topology data.

Every reader takes the filesystem root so captured trees can stand in for a host.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nxrd.kernel.gpu import discover_gpus
from nxrd.kernel.requirements import subtree_path
from nxrd.model.topology import CgroupInfo, Cpu, Node, Topology
from nxrd.model.units import parse_cpu_list


def discover(root: str | Path = "/", *, gpus: bool = True, subtree: str | None = None) -> Topology:
    """The host's topology; GPUs through NVML (0 GPUs plus a note without a driver).

    subtree: the cgroup nxrd owns (an absolute path), whose reach its CPUs and memory
    nodes are read from; by default the one subtree_path names.
    """
    root = Path(root)
    info = cgroup_info(root)
    subtree = subtree or subtree_path(info)
    if subtree is not None and info.mount is not None:
        allowed, mems = reach(root, info.mount, subtree)
        info = info.model_copy(update={"cpus": allowed, "mems": mems})
    cpus = _cpus(root)
    nodes = _nodes(root, cpus)
    node_of = {cpu: n.id for n in nodes for cpu in _node_cpus(root, n.id)}
    cpus = [c.model_copy(update={"node": node_of.get(c.id, 0)}) for c in cpus]
    found, note = discover_gpus(root) if gpus else ([], "GPU discovery disabled")
    return Topology(
        hostname=socket.gethostname() if root == Path("/") else "",
        cpus=cpus,
        nodes=nodes,
        memory=_meminfo_total(root / "proc/meminfo"),
        page_size=os.sysconf("SC_PAGE_SIZE") if root == Path("/") else 4096,
        gpus=found,
        gpu_note=note,
        cgroup=info,
        interfaces=interfaces(root),
    )


def interfaces(root: Path) -> dict[str, int | None]:
    """Network interfaces and their link speed in bits/s: sysfs's `speed` (Mb/s), None where
    the driver does not report one (-1, or an error while the link is down)."""
    out: dict[str, int | None] = {}
    net = root / "sys/class/net"
    for path in sorted(net.iterdir()) if net.is_dir() else []:
        try:
            mbit = int(_read(path / "speed"))
        except (OSError, ValueError):
            mbit = -1
        out[path.name] = mbit * 1_000_000 if mbit > 0 else None
    return out


def reach(root: Path, mount: str, subtree: str) -> tuple[str, str]:
    """cpuset.cpus.effective and cpuset.mems.effective of the subtree, or of its nearest
    ancestor that has them (before nxrd creates it, or without cpuset enabled there, the
    cgroup runs where that ancestor does); "" for each not found."""
    top = (root / mount.lstrip("/")).resolve()
    path = root / subtree.lstrip("/")
    if not path.resolve().is_relative_to(top):
        return "", ""  # not a cgroup of this mount: nothing known
    while True:
        try:
            return (
                _read(path / "cpuset.cpus.effective"),
                _read(path / "cpuset.mems.effective"),
            )
        except OSError:
            pass
        if path.resolve() == top or path.parent == path:
            return "", ""
        path = path.parent


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _cpus(root: Path) -> list[Cpu]:
    base = root / "sys/devices/system/cpu"
    online = sorted(parse_cpu_list(_read(base / "online")))
    out = []
    for cpu in online:
        topo = base / f"cpu{cpu}/topology"
        try:
            core = int(_read(topo / "core_id"))
            package = int(_read(topo / "physical_package_id"))
        except (OSError, ValueError):
            # No topology directory (some VMs): every CPU is its own core.
            core, package = cpu, 0
        out.append(Cpu(id=cpu, core=core, package=max(package, 0)))
    return out


def _node_cpus(root: Path, node: int) -> frozenset[int]:
    try:
        text = _read(root / f"sys/devices/system/node/node{node}/cpulist")
    except OSError:
        return frozenset()
    return parse_cpu_list(text) if text else frozenset()


def _nodes(root: Path, cpus: list[Cpu]) -> list[Node]:
    base = root / "sys/devices/system/node"
    try:
        ids = sorted(parse_cpu_list(_read(base / "online")))
    except OSError:
        ids = []
    if not ids:
        return [Node(id=0, memory=_meminfo_total(root / "proc/meminfo"))]
    return [Node(id=i, memory=_meminfo_total(base / f"node{i}/meminfo")) for i in ids]


def _meminfo_total(path: Path) -> int:
    """MemTotal in bytes, from /proc/meminfo or a node's meminfo."""
    return meminfo(path).get("MemTotal", 0)


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo (or a node's: "Node 0 MemTotal: ..."), in bytes ({} if unreadable)."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        keys = [i for i, p in enumerate(parts) if p.endswith(":")]
        if keys and keys[-1] + 1 < len(parts):
            i = keys[-1]
            value = int(parts[i + 1])
            out[parts[i][:-1]] = value * 1024 if parts[i + 2 : i + 3] == ["kB"] else value
    return out


def cgroup_info(root: Path = Path("/")) -> CgroupInfo:
    """Where cgroup v2 is mounted, our own cgroup, its controllers and whether we can write it."""
    mount = None
    v1: list[str] = []
    try:
        mountinfo = (root / "proc/self/mountinfo").read_text(encoding="utf-8")
    except OSError:
        mountinfo = ""
    for line in mountinfo.splitlines():
        # mountinfo(5): fields ... mount-point ... " - " fstype source super-options
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or not post_fields:
            continue
        if post_fields[0] == "cgroup2" and mount is None:
            mount = fields[4]
        elif post_fields[0] == "cgroup" and len(post_fields) > 2:
            opts = post_fields[2].split(",")
            v1 += [c for c in ("cpu", "cpuset", "memory", "pids", "io", "blkio") if c in opts]
    own = None
    try:
        for line in (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines():
            if line.startswith("0::"):
                own = line[3:]
    except OSError:
        pass
    controllers: list[str] = []
    subtree: list[str] = []
    writable = False
    if mount is not None and own is not None:
        path = root / mount.lstrip("/") / own.lstrip("/")
        try:
            controllers = _read(path / "cgroup.controllers").split()
        except OSError:
            controllers = []
        try:
            subtree = _read(path / "cgroup.subtree_control").split()
        except OSError:
            subtree = []
        # Delegation: we must be able to create children and move processes into them.
        writable = os.access(path, os.W_OK) and os.access(path / "cgroup.procs", os.W_OK)
    return CgroupInfo(
        mount=mount,
        own_path=own,
        controllers=controllers,
        subtree_control=subtree,
        writable=writable,
        v1_controllers=sorted(set(v1)),
    )
