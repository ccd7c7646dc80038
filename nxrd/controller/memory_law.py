"""Right-sizing memory: memory.high follows a workload's memory pressure, in the spirit of
Meta's senpai. Pure: what was read in, the next memory.high out.

While the share of time some task of the workload stalled on memory (memory.pressure's
`some` total, over the last interval) stays under the threshold, memory.high is lowered
from what the workload uses now, by up to SHRINK of it per interval, less the closer the
pressure is to the threshold: the kernel reclaims what it holds but does not touch (page
cache read once, memory freed by the program but kept by its allocator as file pages),
which costs nothing while nothing of it is needed again. Once the pressure is over the
threshold, the last steps took memory it uses: memory.high goes back up by GROW of the
larger of it and what it uses, so a workload that needs more gets it within a few
intervals. Never under the profile's floor, never above its own memory_high/memory_max.
"""

from __future__ import annotations

# per interval: lowered by up to 5% of what it uses (from twice its working set to within
# 20% of it in ~13 intervals: under 30 s at the default 2 s), raised by 10%
SHRINK = 0.05
GROW = 0.10


def next_high(
    high: int | None,
    current: int,
    pressure: float,
    threshold: float,
    floor: int,
    cap: int | None,
) -> int | None:
    """The next memory.high, in bytes (None: leave the planned one).

    high: the last one written (None: none yet, the workload's planned value stands);
    current: memory.current; pressure and threshold: shares of the interval (0.001 is
    0.1%); floor and cap: the profile's bounds (cap None: no limit of its own).
    """
    top = cap if cap is not None else 1 << 62
    if pressure > threshold:
        if high is None:
            return None  # nothing lowered yet: the pressure is not of its making
        base = max(high, current)
        return max(floor, min(top, int(base * (1 + GROW))))
    using = current if high is None else min(high, current)
    step = int(using * SHRINK * (1 - pressure / threshold))
    return max(floor, min(top, using - step))
