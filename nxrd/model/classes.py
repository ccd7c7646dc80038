"""The class policy: what each workload class gets, declared once.

The planner reads its defaults (order, parent weight, exclusive cores, cpu.idle, memory
protection, restart policy), the controller its ladder (which classes are protected, which
are weighted down, capped, lent from, shared onto, frozen and stopped, in which order), and
the profile reference prints it (docs/profiles.md). Every default is overridable per
workload in the profile; what the controller may do is bounded further by its `control`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WorkloadClass = Literal["latency-critical", "interactive", "batch", "background"]


@dataclass(frozen=True)
class ClassPolicy:
    name: WorkloadClass
    rank: int  # planning order: lower first
    # Hierarchical cpu.weight: siblings compete by their weights, so the class parents set
    # the split between classes and a workload's cpu_weight only ranks it inside its class.
    parent_weight: int | None  # cpu.weight of the class's parent cgroup; None = cpu.idle
    exclusive: bool  # whole cores of its own by default
    idle: bool  # cpu.idle by default (unless the workload sets cpu_weight)
    protect_memory: bool  # memory.low defaults to its memory_max
    swap: bool  # may be swapped out by default (else memory.swap.max defaults to 0)
    restart: Literal["no", "on-failure", "always"]  # default restart policy
    # -- the controller
    protected: bool  # its SLO is what the controller keeps (it only ever grows it)
    weight_cut: int | None  # the weight rung divides its cpu.weight by this; None: not cut
    capped: bool  # cap rungs set its cpu.max (a protected class is never capped)
    lends_cores: bool  # its shared cores may be lent to protected workloads
    shares: bool  # runs on the protected workloads' cores while every SLO is comfortable
    freeze_order: int | None  # its freeze rung's place on the ladder; None: never frozen
    stoppable: bool  # a rung stops it (and starts it again once it is stepped down)
    stop_default: bool  # control.stop's default: stopped without the profile asking


# 1000:300:50 keeps batch from crowding interactive work; background runs at cpu.idle
# and gets only otherwise idle time. A weight rung cuts interactive mildly (/2), batch and
# background hard (/10); background is frozen, then stopped (by default: it has nothing to
# finish on time), before batch is frozen.
CLASSES: dict[str, ClassPolicy] = {
    p.name: p
    for p in (
        ClassPolicy(
            "latency-critical",
            rank=0,
            parent_weight=1000,
            exclusive=True,
            idle=False,
            protect_memory=True,
            swap=False,
            restart="on-failure",
            protected=True,
            weight_cut=None,
            capped=False,
            lends_cores=False,
            shares=False,
            freeze_order=None,
            stoppable=False,
            stop_default=False,
        ),
        ClassPolicy(
            "interactive",
            rank=1,
            parent_weight=300,
            exclusive=False,
            idle=False,
            protect_memory=False,
            swap=True,
            restart="on-failure",
            protected=False,
            weight_cut=2,
            capped=False,
            lends_cores=True,
            shares=False,
            freeze_order=None,
            stoppable=False,
            stop_default=False,
        ),
        ClassPolicy(
            "batch",
            rank=2,
            parent_weight=50,
            exclusive=False,
            idle=False,
            protect_memory=False,
            swap=True,
            restart="on-failure",
            protected=False,
            weight_cut=10,
            capped=True,
            lends_cores=True,
            shares=True,
            freeze_order=1,
            stoppable=True,
            stop_default=False,
        ),
        ClassPolicy(
            "background",
            rank=3,
            parent_weight=None,
            exclusive=False,
            idle=True,
            protect_memory=False,
            swap=True,
            restart="on-failure",
            protected=False,
            weight_cut=10,
            capped=True,
            lends_cores=True,
            shares=False,
            freeze_order=0,
            stoppable=True,
            stop_default=True,
        ),
    )
}

CLASS_NAMES: tuple[WorkloadClass, ...] = tuple(p.name for p in CLASSES.values())


def policy(workload_class: str) -> ClassPolicy:
    return CLASSES[workload_class]


# Where the kernel's OOM killer looks first when the whole machine runs out (a workload
# over its own memory.max loses only itself): background, then batch, then interactive,
# latency-critical last. Each class's band is 200 wide and never overlaps the next; within
# it the lower `priority` goes first (the kernel's own badness, the task's size, then
# decides between equals). -1000 (never) is not used: a runaway latency-critical process
# must still be killable.
OOM_BASE = {"latency-critical": -850, "interactive": -250, "batch": 350, "background": 850}


def oom_score_adj(workload_class: str, priority: int) -> int:
    """The oom_score_adj a workload's processes start with (priority 0-1000)."""
    return OOM_BASE[workload_class] + (500 - priority) // 5


def table() -> str:
    """The policy as a Markdown table, for the profile reference."""
    rows = [
        "| class | rank | parent `cpu.weight` | exclusive cores | `cpu.idle` | `memory.low` = "
        "`memory_max` | swapped | restart | controller | weight rung | capped | lends cores | "
        "shares protected cores | frozen | stopped |",
        "|" + "---|" * 15,
    ]

    def yes(b: bool) -> str:
        return "yes" if b else "no"

    for p in CLASSES.values():
        rows.append(
            f"| {p.name} | {p.rank} | {p.parent_weight or 'cpu.idle'} | {yes(p.exclusive)} | "
            f"{yes(p.idle)} | {yes(p.protect_memory)} | {yes(p.swap)} | {p.restart} | "
            f"{'protects it' if p.protected else 'may squeeze it'} | "
            f"{f'/{p.weight_cut}' if p.weight_cut else 'no'} | {yes(p.capped)} | "
            f"{yes(p.lends_cores)} | {yes(p.shares)} | "
            f"{'no' if p.freeze_order is None else f'yes ({p.freeze_order + 1}.)'} | "
            f"{('by default' if p.stop_default else 'if control.stop') if p.stoppable else 'no'} |"
        )
    return "\n".join(rows) + "\n"
