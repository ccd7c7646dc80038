"""Windowed quantiles from scraped Prometheus histograms, computed as Prometheus does.

Pure: exposition text and scrape times in, quantile estimates out. The window's counts are
the increase of each cumulative bucket between scrapes (a counter that went down was
reset: its new value is the increase, as increase() treats it); the quantile is
interpolated linearly inside the bucket that holds its rank, as histogram_quantile() does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Buckets = dict[float, float]  # upper bound (le) -> cumulative count


class ScrapeError(ValueError):
    """The endpoint's text does not hold the histogram asked for."""


def families(text: str) -> list[Any]:
    """The metric families of a Prometheus text exposition."""
    # Imported here: only prometheus latency sources need the parser, and importing it is a
    # tenth of nxrd's start-up, which is how long workloads go unsupervised after a crash.
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as e:
        raise ScrapeError(f"not Prometheus text format: {e}") from None


def parse_histogram(text: str, metric: str, labels: Mapping[str, str]) -> Buckets:
    """Cumulative buckets of one histogram series; series matching labels are summed."""
    buckets: Buckets = {}
    for fam in families(text):
        for s in fam.samples:
            if s.name != f"{metric}_bucket" or "le" not in s.labels:
                continue
            if any(s.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    if not buckets:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        raise ScrapeError(f"no histogram {metric}{{{want}}} in the scrape")
    if math.inf not in buckets:
        raise ScrapeError(f"histogram {metric} has no +Inf bucket")
    return buckets


def increase(older: Buckets, newer: Buckets) -> Buckets:
    """Per-bucket increase between two scrapes; a bucket that went down was reset."""
    reset = any(newer.get(le, 0.0) < count for le, count in older.items())
    if reset or set(newer) != set(older):
        return dict(newer)  # the counters restarted (or the buckets changed): all is new
    return {le: newer[le] - older[le] for le in newer}


def quantile(q: float, buckets: Buckets) -> float | None:
    """histogram_quantile(q) over cumulative buckets; None without observations."""
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # as Prometheus: force monotonic (scrape races)
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if bounds[i] == math.inf:
        return bounds[-2] if len(bounds) > 1 else None  # above the last finite bound
    lower = 0.0 if i == 0 else bounds[i - 1]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    below = 0.0 if i == 0 else counts[i - 1]
    inside = counts[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


def resolution(bounds: Sequence[float], target: float) -> str | None:
    """A sentence when the target lies inside a bucket, so estimates near it are coarse."""
    finite = sorted(b for b in bounds if b != math.inf)
    if any(math.isclose(b, target, rel_tol=1e-6) for b in finite):
        return None
    lower = max((b for b in finite if b < target), default=0.0)
    upper = min((b for b in finite if b > target), default=math.inf)
    if upper == math.inf:
        return (
            f"the target {target:g}s is above the largest finite bucket ({lower:g}s): "
            f"latency above {lower:g}s reads as {lower:g}s"
        )
    return (
        f"the target {target:g}s lies inside the bucket ({lower:g}s, {upper:g}s]: "
        "latency near it is interpolated, not measured"
    )


@dataclass
class Window:
    """Scrapes over the last `seconds`, giving the quantile of what happened in them."""

    seconds: float
    scrapes: deque[tuple[float, Buckets]]

    @classmethod
    def of(cls, seconds: float) -> Window:
        return cls(seconds, deque())

    def add(self, now: float, buckets: Buckets) -> None:
        self.scrapes.append((now, buckets))
        # Keep one scrape at or before the window's start: the baseline of its increase.
        while len(self.scrapes) > 2 and self.scrapes[1][0] <= now - self.seconds:
            self.scrapes.popleft()

    def counts(self) -> Buckets | None:
        """Observations in the window, as cumulative buckets; None before two scrapes."""
        if len(self.scrapes) < 2:
            return None
        total: Buckets = {}
        pairs = zip(list(self.scrapes)[:-1], list(self.scrapes)[1:], strict=True)
        for (_, a), (_, b) in pairs:
            for le, n in increase(a, b).items():
                total[le] = total.get(le, 0.0) + n
        return total

    def quantile(self, q: float) -> float | None:
        counts = self.counts()
        return None if counts is None else quantile(q, counts)
