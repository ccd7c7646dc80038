"""The plan: exact cgroup values, CPUs, GPUs and environment per workload.

Its JSON form (``nxrctl plan -o json``) is stable and documented in docs/plan-json.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from nxrd.model.base import Data
from nxrd.model.egress import Egress
from nxrd.model.values import LeafValues, ParentValues

PLAN_FORMAT = 1
DAEMON_LEAF = "nxrd"  # nxrd's own leaf in its subtree, where daemon_cpus go
MPS_ROOT = "/run/nxr/mps"  # one directory per GPU: pipe/ and log/ of its control daemon


class GpuAssignment(Data):
    index: int
    uuid: str
    node: int | None = None
    shared: bool = False


class Rendered(Data):
    """A plan entry whose typed values are its truth and whose files their rendering; one
    read from its JSON (files only) gets its values back from the files."""

    kind: ClassVar[type[LeafValues] | type[ParentValues]]

    @model_validator(mode="before")
    @classmethod
    def _render(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "values" in data:
            values = data["values"]
            if not isinstance(values, cls.kind):
                values = cls.kind.model_validate(values)
            return {**data, "values": values, "files": values.render()}
        if "files" in data:
            return {**data, "values": cls.kind.parse(data["files"])}
        return data


class CgroupPlan(Rendered):
    """A non-leaf cgroup: the subtree root ("") or a class parent."""

    kind = ParentValues
    path: str
    files: dict[str, str] = Field(default_factory=dict, description="rendered from values")
    values: ParentValues = Field(exclude=True)


class WorkloadPlan(Rendered):
    kind = LeafValues
    name: str
    replica_of: str | None = Field(None, description="the declared workload it is a replica of")
    port: int | None = Field(None, description="the port it listens on (NXR_PORT)")
    front_config: str | None = Field(
        None, description="a front's HAProxy configuration, rendered from the profile"
    )
    workload_class: str = Field(alias="class", serialization_alias="class")
    cgroup: str = Field(description="path relative to nxrd's subtree root")
    exclusive: bool
    cpus: str = Field(description="CPU list, as cpuset.cpus reads back")
    cpu_count: int
    cpus_requested: int | None = None
    mems: str
    gpus: list[GpuAssignment] = Field(default_factory=list)
    threads: int | None = None
    files: dict[str, str] = Field(default_factory=dict, description="rendered from values")
    env: dict[str, str] = Field(description="variables nxr injects on top of the profile's env")
    notes: list[str] = Field(default_factory=list)
    values: LeafValues = Field(exclude=True)

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Keys that only replicas and listeners have: other plans keep their JSON as it was.
        data: dict[str, Any] = handler(self)
        for key in ("replica_of", "port", "front_config"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Plan(Data):
    format: int = PLAN_FORMAT
    hostname: str = ""
    online_cpus: str
    reserved_cpus: str
    shared_cpus: str
    memory: int
    reserved_memory: int
    guaranteed_memory: int
    root: CgroupPlan
    classes: list[CgroupPlan]
    workloads: list[WorkloadPlan]
    warnings: list[str] = Field(default_factory=list)
    mps: list[str] = Field(
        default_factory=list, description="UUIDs of the GPUs whose MPS control daemon nxrd runs"
    )
    egress: Egress | None = Field(None, description="egress shaping (docs/network.md)")

    @model_serializer(mode="wrap")
    def _omit_unshaped(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a plan that shapes nothing keeps its JSON as it was
        data: dict[str, Any] = handler(self)
        if data.get("egress") is None:
            data.pop("egress", None)
        return data

    @property
    def daemon_cpus(self) -> str:
        """Where nxrd itself runs: the reserved CPUs, else the shared pool; every online CPU
        only when workloads hold all the others exclusively."""
        return self.reserved_cpus or self.shared_cpus or self.online_cpus

    def workload(self, name: str) -> WorkloadPlan:
        for wl in self.workloads:
            if wl.name == name:
                return wl
        raise KeyError(name)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True) + "\n"


def mps_dirs(uuid: str) -> tuple[str, str]:
    """(pipe, log) directories of the MPS control daemon of one GPU."""
    return f"{MPS_ROOT}/{uuid}/pipe", f"{MPS_ROOT}/{uuid}/log"
