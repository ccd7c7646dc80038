"""The memory guard's decisions (pure): is the machine about to run out of memory, and
which workload goes first. docs/memory.md; the I/O is nxrd/daemon/memory_guard.py.

The kernel's OOM killer acts only once reclaim has failed: by then every task of the
machine, the latency-critical server's included, has stalled in direct reclaim for
seconds. Like earlyoom, the guard acts while there is still a margin: available memory
(MemAvailable) and free swap both under their thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

from nxrd.model.units import format_size

# Victims by class, the first listed first; latency-critical and interactive never.
KILLABLE = ("background", "batch")

# The fastest the guard assumes memory is taken, for how long it may wait before looking
# again (earlyoom's figures): it looks again before that much could be gone.
MEMORY_RATE = 6000 << 20  # bytes a second
SWAP_RATE = 800 << 20
MIN_WAIT, MAX_WAIT = 0.1, 1.0


@dataclass(frozen=True)
class Thresholds:
    available: float  # percent of MemTotal
    swap_free: float  # percent of SwapTotal


@dataclass(frozen=True)
class MemoryUser:
    name: str
    workload_class: str
    priority: int
    current: int  # memory.current, bytes


def _margins(meminfo: dict[str, int], t: Thresholds) -> tuple[int, int]:
    """How far available memory and free swap are above their thresholds, in bytes
    (negative: under). No swap counts as swap already used up."""
    total, swap = meminfo.get("MemTotal", 0), meminfo.get("SwapTotal", 0)
    mem = meminfo.get("MemAvailable", total) - int(total * t.available / 100)
    free = meminfo.get("SwapFree", 0) - int(swap * t.swap_free / 100) if swap else -1
    return mem, free


def short_of_memory(meminfo: dict[str, int], t: Thresholds) -> str | None:
    """Why the machine is about to run out (None: it is not)."""
    mem, free = _margins(meminfo, t)
    if mem >= 0 or free >= 0:
        return None
    total = meminfo.get("MemTotal", 0) or 1
    available = meminfo.get("MemAvailable", 0)
    why = f"memory available {format_size(available)} ({available / total:.1%}) < {t.available:g}%"
    swap = meminfo.get("SwapTotal", 0)
    if swap:
        why += f", swap free {meminfo.get('SwapFree', 0) / swap:.1%} < {t.swap_free:g}%"
    return why


def wait_before_next(meminfo: dict[str, int], t: Thresholds) -> float:
    """Seconds the guard may wait before looking again: the time the fastest allocation it
    assumes would need to eat the margin, within MIN_WAIT..MAX_WAIT."""
    mem, free = _margins(meminfo, t)
    seconds = max(mem, 0) / MEMORY_RATE + max(free, 0) / SWAP_RATE
    return min(MAX_WAIT, max(MIN_WAIT, seconds))


def pick(candidates: list[MemoryUser]) -> MemoryUser | None:
    """The first victim: background before batch, then the lowest priority, then the
    largest. None when no candidate may be killed."""
    killable = [c for c in candidates if c.workload_class in KILLABLE]
    if not killable:
        return None
    return min(killable, key=lambda c: (KILLABLE.index(c.workload_class), c.priority, -c.current))


def describe(chosen: MemoryUser, candidates: list[MemoryUser]) -> str:
    """Why this one: "the lowest-priority batch workload (priority 100), 1.2G"."""
    peers = [c for c in candidates if c.workload_class == chosen.workload_class]
    alone = len(peers) == 1
    lowest = [c for c in peers if c.priority == chosen.priority]
    if alone:
        which = f"the only {chosen.workload_class} workload"
    elif len(lowest) == 1:
        which = f"the lowest-priority {chosen.workload_class} workload"
    else:
        which = f"the largest {chosen.workload_class} workload of the lowest priority"
    return f"{which} (priority {chosen.priority}), using {format_size(chosen.current)}"
