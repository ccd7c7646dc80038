"""Planning: host topology + profile -> exact cgroup values, cores, GPUs, environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nxrd.lazy import attributes

if TYPE_CHECKING:
    from nxrd.model.plan import Plan, WorkloadPlan
    from nxrd.model.topology import Topology, load_topology
    from nxrd.plan.allocate import make_plan

__all__ = ["Plan", "Topology", "WorkloadPlan", "load_topology", "make_plan"]
__getattr__ = attributes(
    __name__,
    {
        "make_plan": "nxrd.plan.allocate",
        "Plan": "nxrd.model.plan",
        "WorkloadPlan": "nxrd.model.plan",
        "Topology": "nxrd.model.topology",
        "load_topology": "nxrd.model.topology",
    },
)
