"""Planning: host topology + profile -> exact cgroup values, cores, GPUs, environment."""

from nxrd.plan.allocate import make_plan
from nxrd.plan.model import Plan, WorkloadPlan
from nxrd.plan.topology import Topology, load_topology

__all__ = ["Plan", "Topology", "WorkloadPlan", "load_topology", "make_plan"]
