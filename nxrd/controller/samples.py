"""Exact windowed percentiles of latencies pushed by a workload, one per request.

Pure: (time, seconds) samples in, the percentile of those in the last `seconds` out. The
window keeps at most `limit` samples (the newest), so a flood cannot grow nxrd's memory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def nearest_rank(values: Iterable[float], q: float) -> float | None:
    """The smallest value at or above a share q of them; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class SampleWindow:
    seconds: float
    limit: int = 100_000
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    dropped: int = 0  # samples pushed out by the limit, not by age

    def add(self, now: float, latency: float) -> None:
        if not math.isfinite(latency) or latency < 0:
            return
        self.samples.append((now, latency))
        if len(self.samples) > self.limit:
            self.samples.popleft()
            self.dropped += 1

    def expire(self, now: float) -> None:
        while self.samples and self.samples[0][0] <= now - self.seconds:
            self.samples.popleft()

    def percentile(self, q: float, now: float) -> float | None:
        """The nearest-rank percentile of the samples in the window."""
        self.expire(now)
        return nearest_rank((v for _, v in self.samples), q)

    def percentile_since(self, q: float, since: float, now: float) -> float | None:
        """The same, over the requests in the window that started after `since` (a sample
        arrives when its request is answered: it started its latency earlier). A request
        queued before a change and answered after it shows the old conditions, not the new."""
        self.expire(now)
        return nearest_rank((v for at, v in self.samples if at - v > since), q)

    def __len__(self) -> int:
        return len(self.samples)
