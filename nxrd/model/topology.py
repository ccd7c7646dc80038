"""Host topology as plain data: what discovery finds and what the planner consumes.

Captured to JSON (``nxrd topology``) so plans can be made for other hosts and tested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from nxrd.errors import TopologyError
from nxrd.model.base import Data
from nxrd.model.units import format_cpu_list, parse_cpu_list


class Cpu(Data):
    """One logical CPU (hardware thread)."""

    id: int = Field(ge=0)
    core: int = Field(description="core_id within its package")
    package: int = 0
    node: int = 0


class Node(Data):
    """A NUMA node."""

    id: int = Field(ge=0)
    memory: int = Field(ge=0, description="bytes")


class MigInstance(Data):
    """A MIG instance of a GPU (its own UUID, memory and compute slice)."""

    index: int = Field(description="slot on its parent GPU")
    uuid: str
    name: str = ""
    memory: int = Field(0, description="bytes")


class Gpu(Data):
    """An NVIDIA GPU as NVML reports it.

    Fields after pci_bus_id came later: their defaults keep older captured topologies valid.
    """

    index: int
    uuid: str
    name: str = ""
    memory: int = Field(0, description="bytes")
    node: int | None = Field(None, description="NUMA node of its PCI slot, if known")
    local_cpus: str | None = Field(None, description="CPUs local to its PCI slot, if known")
    pci_bus_id: str = ""
    minor: int | None = Field(None, description="N of its device file /dev/nvidiaN, if known")
    compute_mode: str = Field(
        "default", description="default, exclusive-process or prohibited (nvidia-smi -c)"
    )
    mig: bool = Field(False, description="MIG mode is enabled now (not only pending a reset)")
    mig_instances: list[MigInstance] = Field(default_factory=list)

    @property
    def device_minor(self) -> int:
        """N of its /dev/nvidiaN: NVML's minor number, else its index (the usual case)."""
        return self.index if self.minor is None else self.minor


def gpu_units(gpus: Sequence[Gpu]) -> dict[str, tuple[Gpu, MigInstance | None]]:
    """What a workload can be given, by UUID: each GPU (with None), and each MIG instance
    (with its GPU)."""
    out: dict[str, tuple[Gpu, MigInstance | None]] = {g.uuid: (g, None) for g in gpus}
    out.update((m.uuid, (g, m)) for g in gpus for m in g.mig_instances)
    return out


def device_minors(gpus: Sequence[Gpu]) -> dict[str, int]:
    """GPU or MIG instance UUID -> N of the /dev/nvidiaN its users open (an instance's is
    its GPU's: MIG instances are reached through their GPU's device file)."""
    return {uuid: gpu.device_minor for uuid, (gpu, _) in gpu_units(gpus).items()}


class CgroupInfo(Data):
    """Whether a usable cgroup v2 subtree is there (plain facts; check explains)."""

    mount: str | None = None
    own_path: str | None = None
    controllers: list[str] = Field(default_factory=list)
    subtree_control: list[str] = Field(default_factory=list)
    writable: bool = False
    v1_controllers: list[str] = Field(default_factory=list)
    cpus: str = Field(
        "",
        description="CPUs nxrd's cgroup may run on: cpuset.cpus.effective of the nearest "
        "cgroup that has one (a parent's limit, as systemd's AllowedCPUs= sets); empty "
        "where not known",
    )
    mems: str = Field("", description="memory nodes it may use (cpuset.mems.effective), likewise")


class Topology(Data):
    """Everything the planner needs to know about a host."""

    hostname: str = ""
    cpus: list[Cpu]
    nodes: list[Node]
    memory: int = Field(ge=0, description="total bytes")
    page_size: int = Field(4096, ge=1, description="bytes per page; memory limits round to it")
    gpus: list[Gpu] = Field(default_factory=list)
    gpu_note: str | None = Field(None, description="why no GPUs were found, if none were")
    cgroup: CgroupInfo = Field(default_factory=CgroupInfo)
    interfaces: dict[str, int | None] = Field(
        default_factory=dict,
        description="network interfaces and their link speed in bits/s (None: not reported)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        def dupes(values: Sequence[object]) -> list[object]:
            return sorted({v for v in values if values.count(v) > 1}, key=str)

        if not self.cpus:
            raise ValueError("no CPUs")
        for what, values in (
            ("CPU ids", [c.id for c in self.cpus]),
            ("node ids", [n.id for n in self.nodes]),
            ("GPU indices", [g.index for g in self.gpus]),
            ("GPU UUIDs", [g.uuid for g in self.gpus]),
        ):
            if dupes(values):
                raise ValueError(f"duplicate {what}: {dupes(values)}")
        nodes = {n.id for n in self.nodes}
        stray = sorted({c.node for c in self.cpus} - nodes)
        if stray:
            raise ValueError(f"CPUs on NUMA nodes {stray} that are not in nodes")
        return self

    def cores(self) -> list[tuple[int, ...]]:
        """Physical cores as sorted tuples of sibling CPU ids, in CPU order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for cpu in self.cpus:
            groups.setdefault((cpu.package, cpu.core), []).append(cpu.id)
        return sorted((tuple(sorted(g)) for g in groups.values()), key=lambda c: c[0])

    def split_by_reach(self) -> dict[int, frozenset[int]]:
        """CPU within nxrd's reach -> its core's sibling threads beyond it: whatever runs
        outside nxrd may run there, so the core is not nxrd's to give whole."""
        if not self.cgroup.cpus:
            return {}
        allowed = parse_cpu_list(self.cgroup.cpus)
        out = {}
        for core in self.cores():
            beyond = frozenset(core) - allowed
            out.update({c: beyond for c in core if c in allowed and beyond})
        return out

    def node_of(self, cpu_id: int) -> int:
        for cpu in self.cpus:
            if cpu.id == cpu_id:
                return cpu.node
        raise KeyError(cpu_id)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def within_reach(self) -> tuple[Topology, list[str]]:
        """The CPUs and memory nodes nxrd's cgroup may use, and a sentence for each limit.

        The kernel takes a cpuset outside the parent's and quietly runs the cgroup on the
        parent's CPUs (or memory), so workloads planned beyond it would share what the plan
        keeps apart. A node whose memory is out of reach counts as memoryless.
        """
        said: list[str] = []
        cpus, nodes, memory = self.cpus, self.nodes, self.memory
        online = {c.id for c in self.cpus}
        allowed = parse_cpu_list(self.cgroup.cpus) if self.cgroup.cpus else online
        if not online <= allowed:
            cpus = [c for c in self.cpus if c.id in allowed]
            if not cpus:
                raise TopologyError(
                    f"nxrd's cgroup may run only on CPUs {self.cgroup.cpus}, none of them "
                    f"online ({format_cpu_list(online)})"
                )
            said.append(
                f"planning on CPUs {format_cpu_list([c.id for c in cpus])} of the "
                f"{format_cpu_list(online)} online: nxrd's cgroup may run only on those "
                "(cpuset.cpus.effective, a parent's limit such as systemd's AllowedCPUs=)"
            )
        with_memory = {n.id for n in self.nodes if n.memory > 0}
        mems = parse_cpu_list(self.cgroup.mems) if self.cgroup.mems else with_memory
        if not with_memory <= mems:
            if not with_memory & mems:
                raise TopologyError(
                    f"nxrd's cgroup may use only memory nodes {self.cgroup.mems}, none of "
                    f"them with memory ({format_cpu_list(with_memory)})"
                )
            nodes = [n if n.id in mems else n.model_copy(update={"memory": 0}) for n in nodes]
            memory = sum(n.memory for n in nodes)
            said.append(
                f"planning on the memory of NUMA nodes {format_cpu_list(with_memory & mems)} "
                "only: nxrd's cgroup may use only those (cpuset.mems.effective, a "
                "parent's limit such as systemd's AllowedMemoryNodes=)"
            )
        if not said:
            return self, []
        return self.model_copy(update={"cpus": cpus, "nodes": nodes, "memory": memory}), said


def load_topology(path: str | Path) -> Topology:
    """Read a captured topology JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        topo = Topology.model_validate(data)
    except OSError as e:
        raise TopologyError(f"{path}: cannot read topology: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise TopologyError(f"{path}: not JSON: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise TopologyError(
            f"{path}: invalid topology: {where + ': ' if where else ''}{msg}"
        ) from None
    return topo
