"""Which CPUs the rest of the machine keeps to: every online CPU but the exclusive cores.
Pure: the plan and what was read in, the values to write out."""

from __future__ import annotations

from nxrd.model.plan import Plan
from nxrd.model.units import format_cpu_list, parse_cpu_list


def exclusive_cpus(plan: Plan) -> frozenset[int]:
    """The CPUs of workloads with cores of their own."""
    out: set[int] = set()
    for wl in plan.workloads:
        if wl.exclusive and wl.cpus:
            out |= parse_cpu_list(wl.cpus)
    return frozenset(out)


def housekeeping_cpus(plan: Plan) -> frozenset[int]:
    """Where system services, interrupts and kernel work go: all but the exclusive cores
    (empty when there are none: nothing to keep clear)."""
    exclusive = exclusive_cpus(plan)
    if not exclusive:
        return frozenset()
    return parse_cpu_list(plan.online_cpus) - exclusive


def irq_cpus(original: str, housekeeping: frozenset[int]) -> str:
    """An interrupt's CPUs: those it had that are housekeeping ones, else every one (an
    interrupt a driver spread over some CPUs stays spread over what is left of them)."""
    try:
        had = parse_cpu_list(original)
    except ValueError:
        had = frozenset()
    return format_cpu_list((had & housekeeping) or housekeeping)


def slices_kept_off(
    slices: tuple[str, ...], tree: str | None, systemd: bool
) -> tuple[list[str], dict[str, str]]:
    """The slices to keep off the exclusive cores, and why each other one is not.

    tree: nxr's subtree, relative to the cgroup mount ("nxr.slice/nxr-workloads.service"),
    None when it is not in the cgroup hierarchy systemd manages."""
    if not systemd:
        return [], {s: "systemd is not the init system" for s in slices}
    top = tree.split("/", 1)[0] if tree else None
    kept, why = [], {}
    for s in slices:
        if s == top:
            why[s] = (
                f"nxr's tree is inside it ({tree}): run nxr-workloads.service in nxr.slice "
                "(Slice=, as shipped)"
            )
        else:
            kept.append(s)
    return kept, why
