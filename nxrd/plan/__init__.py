"""Planning: host topology + profile -> exact cgroup values, cores, GPUs, environment.

Names load on first use (PEP 562): nxrctl's socket commands import nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nxrd.plan.allocate import make_plan
    from nxrd.plan.model import Plan, WorkloadPlan
    from nxrd.plan.topology import Topology, load_topology

_WHERE = {
    "make_plan": "nxrd.plan.allocate",
    "Plan": "nxrd.plan.model",
    "WorkloadPlan": "nxrd.plan.model",
    "Topology": "nxrd.plan.topology",
    "load_topology": "nxrd.plan.topology",
}
__all__ = ["Plan", "Topology", "WorkloadPlan", "load_topology", "make_plan"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nxrd.plan' has no attribute {name!r}")
