"""GPU memory budgets (pure): a workload's use per GPU against its gpu_memory -> events and
its policy's action.

Without MPS nothing stops a CUDA process from allocating past its share, so nxrd watches:
over budget is said at once (warn); `restart` and `stop` act only once the workload has
stayed over for `grace` polls in a row, since allocators briefly overshoot while loading
weights. Budget restarts count against the workload's restart limits: past max_restarts
within its window, the workload is stopped instead of restarted for ever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from nxrd.model.units import format_size

POLICIES = ("warn", "restart", "stop")


@dataclass(frozen=True)
class Budget:
    limit: int  # bytes it may hold on each of its GPUs
    policy: str = "warn"  # one of POLICIES
    max_restarts: int = 5
    window: float = 300.0  # seconds over which max_restarts counts


@dataclass(frozen=True)
class Watch:
    """What nxrd remembers of one workload's budget between polls."""

    over: int = 0  # polls in a row over budget
    restarts: tuple[float, ...] = ()  # when the budget restarted it


@dataclass(frozen=True)
class Action:
    workload: str
    kind: str  # "over" (say it), "under" (back within), "restart", "stop"
    cause: str


def judge(
    known: Mapping[str, Watch],
    usage: Mapping[str, Mapping[int, int | None]],
    budgets: Mapping[str, Budget],
    now: float,
    grace: int = 3,
) -> tuple[dict[str, Watch], list[Action]]:
    """usage: running workload -> GPU index -> bytes held (None: not reported)."""
    out: dict[str, Watch] = {}
    actions: list[Action] = []
    for name, budget in budgets.items():
        was = known.get(name, Watch())
        held = {gpu: used for gpu, used in usage.get(name, {}).items() if used is not None}
        worst = max(held.items(), key=lambda kv: kv[1], default=None)
        if worst is None or worst[1] <= budget.limit:
            if was.over:
                actions.append(
                    Action(name, "under", f"GPU memory back within {format_size(budget.limit)}")
                )
            out[name] = replace(was, over=0)
            continue
        gpu, used = worst
        over = was.over + 1
        what = f"GPU memory {format_size(used)} on GPU {gpu}, over its {format_size(budget.limit)}"
        if over == 1:
            actions.append(Action(name, "over", f"{what} (policy {budget.policy})"))
        now_watch = replace(was, over=over)
        if budget.policy != "warn" and over >= grace:
            recent = tuple(t for t in was.restarts if t > now - budget.window)
            if budget.policy == "stop":
                actions.append(Action(name, "stop", what))
                now_watch = Watch(restarts=recent)
            elif len(recent) >= budget.max_restarts:
                actions.append(
                    Action(name, "stop", f"{what}; already restarted {_times(len(recent))}")
                )
                now_watch = Watch(restarts=recent)
            else:
                actions.append(Action(name, "restart", what))
                now_watch = Watch(restarts=(*recent, now))
        out[name] = now_watch
    return out, actions


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"
