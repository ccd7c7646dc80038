"""Queue waits at each front, from the requests it logs: cumulative histograms for the
metrics endpoint and the last seconds' percentiles for status. Pure: requests in, figures
out.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from nxrd.controller.samples import SampleWindow, nearest_rank
from nxrd.front.requests import LoggedRequest

# Upper bounds of the buckets, in seconds (HAProxy counts in whole ms).
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
RECENT = 10.0  # seconds of waits behind status's percentiles


@dataclass
class Waits:
    """One front's queue waits: cumulative buckets per (replica, priority) since nxrd
    started, for the metrics endpoint, and the last RECENT seconds, for status."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)
    recent: SampleWindow = field(default_factory=lambda: SampleWindow(RECENT, limit=10_000))

    def add(self, now: float, r: LoggedRequest) -> None:
        if r.wait is None:
            return  # refused before the queue: counted as shed or held, never waited
        key = (r.server or "", r.priority)
        counts = self.counts.setdefault(key, [0] * len(BUCKETS))
        counts[bisect.bisect_left(BUCKETS, r.wait)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + r.wait
        self.recent.add(now, r.wait)

    def figures(self, now: float) -> dict[str, object]:
        """p50 and p99 of the recent waits (None when none queued), and the histogram:
        per "replica/priority" (replica empty: dropped in the queue) the cumulative count
        at or under each bound of `le` (the last is +Inf) and the sum."""
        self.recent.expire(now)
        recent = [v for _, v in self.recent.samples]
        histogram: dict[str, object] = {}
        for (replica, priority), counts in sorted(self.counts.items()):
            cumulative, total = [], 0
            for n in counts:
                total += n
                cumulative.append(total)
            histogram[f"{replica}/{priority}"] = {
                "counts": cumulative,
                "sum": round(self.sums[(replica, priority)], 3),
            }
        return {
            "queue_wait_p50": nearest_rank(recent, 0.5),
            "queue_wait_p99": nearest_rank(recent, 0.99),
            "queue_wait": {"le": [str(b) for b in BUCKETS[:-1]] + ["+Inf"], **histogram},
        }
