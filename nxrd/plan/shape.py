"""Egress shaping planned from the profile and the host's interfaces: which interfaces, what
each link carries, and a class per shaped workload (nxrd/model/egress.py). Pure."""

from __future__ import annotations

from nxrd.errors import Problem
from nxrd.model.egress import PRIORITY, Egress, EgressClass, Interface, minors
from nxrd.model.replicas import group_of
from nxrd.model.topology import Topology
from nxrd.model.units import format_rate
from nxrd.profile.model import Profile


def plan_egress(profile: Profile, topo: Topology, problems: list[Problem]) -> Egress | None:
    """None when nothing is shaped; refusals go to problems."""
    net = profile.host.net
    shaped = {n: wl for n, wl in profile.workloads.items() if wl.net is not None}
    if not shaped:
        return None
    interfaces = []
    for name in net.interfaces:
        if name not in topo.interfaces:
            have = ", ".join(sorted(topo.interfaces)) or "none"
            problems.append(
                Problem("host.net.interfaces", f"no interface {name} on this host (it has {have})")
            )
            continue
        link = net.link or topo.interfaces[name]
        if link is None:
            problems.append(
                Problem("host.net.link", f"{name} does not report its speed: give the link's rate")
            )
            continue
        interfaces.append(Interface(name=name, link=link))
    if not interfaces:
        return None
    link = min(i.link for i in interfaces)  # every interface carries each workload's class
    classes = []
    for name, minor in minors(list(shaped)).items():
        wl_net = shaped[name].net
        assert wl_net is not None
        ceil = min(wl_net.egress or link, link)
        rate = wl_net.guarantee or min(ceil, max(link // 1000, 8))
        priority = wl_net.priority
        if priority is None:
            priority = PRIORITY[shaped[name].workload_class]
        classes.append(
            EgressClass(workload=name, minor=minor, rate=rate, ceil=ceil, priority=priority)
        )
    floors = sum(c.rate for c in classes)
    if floors > link:
        problems.append(
            Problem(
                "host.net.link",
                f"the workloads' guarantees add up to {format_rate(floors)}, more than the"
                f" {format_rate(link)} link",
            )
        )
    for name, wl in shaped.items():
        asked = max(wl.net.egress or 0, wl.net.guarantee or 0) if wl.net else 0
        # a replica's refusal is its declared workload's, once
        too_much = Problem(
            f"workloads.{group_of(name)}.net",
            f"{format_rate(asked)} is more than the {format_rate(link)} link",
        )
        if asked > link and too_much not in problems:
            problems.append(too_much)
    return Egress(interfaces=interfaces, classes=classes)
