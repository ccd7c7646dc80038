"""Host topology as plain data: what discovery finds and what the planner consumes.

Captured to JSON (``nxrd topology``) so plans can be made for other hosts and tested.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nxrd.errors import TopologyError


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cpu(Data):
    """One logical CPU (hardware thread)."""

    id: int
    core: int = Field(description="core_id within its package")
    package: int = 0
    node: int = 0


class Node(Data):
    """A NUMA node."""

    id: int
    memory: int = Field(description="bytes")


class Gpu(Data):
    """An NVIDIA GPU as NVML reports it."""

    index: int
    uuid: str
    name: str = ""
    memory: int = Field(0, description="bytes")
    node: int | None = Field(None, description="NUMA node of its PCI slot, if known")
    pci_bus_id: str = ""


class CgroupInfo(Data):
    """Whether a usable cgroup v2 subtree is there (plain facts; check explains)."""

    mount: str | None = None
    own_path: str | None = None
    controllers: list[str] = Field(default_factory=list)
    writable: bool = False
    v1_controllers: list[str] = Field(default_factory=list)


class Topology(Data):
    """Everything the planner needs to know about a host."""

    hostname: str = ""
    cpus: list[Cpu]
    nodes: list[Node]
    memory: int = Field(description="total bytes")
    gpus: list[Gpu] = Field(default_factory=list)
    gpu_note: str | None = Field(None, description="why no GPUs were found, if none were")
    cgroup: CgroupInfo = Field(default_factory=CgroupInfo)

    def cores(self) -> list[tuple[int, ...]]:
        """Physical cores as sorted tuples of sibling CPU ids, in CPU order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for cpu in self.cpus:
            groups.setdefault((cpu.package, cpu.core), []).append(cpu.id)
        return sorted((tuple(sorted(g)) for g in groups.values()), key=lambda c: c[0])

    def node_of(self, cpu_id: int) -> int:
        for cpu in self.cpus:
            if cpu.id == cpu_id:
                return cpu.node
        raise KeyError(cpu_id)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


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
        raise TopologyError(f"{path}: invalid topology: {where}: {first['msg']}") from None
    if not topo.cpus:
        raise TopologyError(f"{path}: invalid topology: no CPUs")
    return topo
