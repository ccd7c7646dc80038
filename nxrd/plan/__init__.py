"""Planning: host topology + profile -> exact cgroup values, cores, GPUs, environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nxrd.lazy import attributes

if TYPE_CHECKING:
    from nxrd.plan.allocate import make_plan
    from nxrd.plan.model import Plan, WorkloadPlan
    from nxrd.plan.topology import Topology, load_topology

__all__ = ["Plan", "Topology", "WorkloadPlan", "load_topology", "make_plan"]
__getattr__ = attributes(
    __name__,
    {
        "make_plan": "nxrd.plan.allocate",
        "Plan": "nxrd.plan.model",
        "WorkloadPlan": "nxrd.plan.model",
        "Topology": "nxrd.plan.topology",
        "load_topology": "nxrd.plan.topology",
    },
)
