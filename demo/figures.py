"""The demo's and co-location benchmark's figures from recorded runs. Pure: lists in,
numbers out (demo.report reads the files and prints)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nxrd.controller.samples import nearest_rank

LOST = math.inf  # a request without a reply counts as infinitely late


percentile = nearest_rank  # the controller's own percentile, so both agree


def windows(
    samples: Sequence[tuple[float, float]], start: float, end: float, size: float, q: float
) -> list[tuple[float, float | None]]:
    """(window start, q-quantile of the latencies due in it) for back-to-back windows."""
    out = []
    t = start
    while t + size <= end + 1e-9:
        out.append((t, percentile([v for at, v in samples if t <= at < t + size], q)))
        t += size
    return out


def over(wins: Sequence[tuple[float, float | None]], slo: float) -> float:
    """Share of windows (with requests) whose quantile exceeds the SLO."""
    seen = [v for _, v in wins if v is not None]
    return sum(v > slo for v in seen) / len(seen) if seen else 0.0


def reaction(
    samples: Sequence[tuple[float, float]], step: float, end: float, slo: float, q: float
) -> float | None:
    """Seconds from a load step until every later 1 s window's quantile is within the SLO
    (0 when none exceeded it; None when the last one still does)."""
    wins = windows(samples, step, end, 1.0, q)
    bad = [t for t, v in wins if v is not None and v > slo]
    if not bad:
        return 0.0
    if bad[-1] == wins[-1][0]:
        return None
    return bad[-1] + 1.0 - step


def rate(series: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Mean rate of a cumulative counter sampled as (time, total) between start and end,
    interpolated linearly between samples; over the part the samples cover, if that is at
    least half of it."""
    if not series:
        return None
    lo, hi = max(start, series[0][0]), min(end, series[-1][0])
    if hi - lo < (end - start) / 2 or hi <= lo:
        return None
    a, b = _at(series, lo), _at(series, hi)
    if a is None or b is None:
        return None
    return (b - a) / (hi - lo)


def _at(series: Sequence[tuple[float, float]], t: float) -> float | None:
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return None


@dataclass(frozen=True)
class Phase:
    rate: float  # requests per second
    start: float  # seconds from the load's start
    end: float


def phases(text: str) -> list[Phase]:
    """ "8:20,24:40" -> 8/s for 20 s, then 24/s for 40 s."""
    out, t = [], 0.0
    for part in text.split(","):
        r, _, s = part.partition(":")
        out.append(Phase(float(r), t, t + float(s)))
        t += float(s)
    return out


def of_capacity(text: str, capacity: float) -> str:
    """ "20%:20,60%:30" with a capacity of 50 requests/s -> "10:20,30:30" (rates to one
    decimal); a rate without "%" stays as it is."""
    out = []
    for part in text.split(","):
        r, _, s = part.partition(":")
        rate = float(r[:-1]) / 100 * capacity if r.endswith("%") else float(r)
        out.append(f"{rate:.1f}:{s}")
    return ",".join(out)


@dataclass(frozen=True)
class PhaseFigures:
    rate: float
    p99: float | None  # at the SLO's percentile, over the whole phase
    over: float  # share of windows over the SLO
    windows: int
    batch: float | None  # batch throughput as a share of batch alone
    server_cpu: float | None  # CPUs the server used
    nxrd_cpu: float | None  # CPUs nxrd itself used (None without nxrd)
    reaction: float | None  # for a phase that starts with a step up; else None
    batch_cpu: float | None = None  # CPUs the batch job used
    host_cpu: float | None = None  # CPUs busy on the whole host
    steps_up: bool = False  # the load stepped up at its start
    # the server's CPU seconds per request it answered in the phase (its own speed)
    cpu_per_request: float | None = None
    # share of windows over the SLO, and their number, from `settle` after the phase's
    # start: the windows right after a load change left out
    settled_over: float = 0.0
    settled_windows: int = 0


def phase_figures(
    ph: Phase,
    steps_up: bool,
    samples: Sequence[tuple[float, float]],
    batch: Sequence[tuple[float, float]],
    server: Sequence[tuple[float, float]],
    slo: float,
    q: float,
    alone: float | None,
    settle: float,
    window: float,
    daemon: Sequence[tuple[float, float]] = (),
    batch_cpu: Sequence[tuple[float, float]] = (),
    host: Sequence[tuple[float, float]] = (),
) -> PhaseFigures:
    """Figures of one phase. Times of batch and server series are seconds from the load's
    start, like the samples'; windows start `settle` seconds into the run (the settled ones,
    of those, `settle` seconds into the phase or later)."""
    begin = max(ph.start, settle)
    wins = windows(samples, begin, ph.end, window, q)
    settled = [(t, v) for t, v in wins if t >= ph.start + settle - 1e-9]
    in_phase = [v for t, v in samples if ph.start <= t < ph.end]
    answered = sum(ph.start <= t + v < ph.end for t, v in samples)  # never a lost one
    b = rate(batch, ph.start, ph.end)
    server_cpu = rate(server, ph.start, ph.end)
    return PhaseFigures(
        rate=ph.rate,
        p99=percentile(in_phase, q),
        over=over(wins, slo),
        windows=sum(v is not None for _, v in wins),
        batch=None if b is None or not alone else b / alone,
        server_cpu=server_cpu,
        nxrd_cpu=rate(daemon, ph.start, ph.end),
        reaction=reaction(samples, ph.start, ph.end, slo, q) if steps_up else None,
        batch_cpu=rate(batch_cpu, ph.start, ph.end),
        host_cpu=rate(host, ph.start, ph.end),
        steps_up=steps_up,
        cpu_per_request=(
            server_cpu * (ph.end - ph.start) / answered
            if server_cpu is not None and answered
            else None
        ),
        settled_over=over(settled, slo),
        settled_windows=sum(v is not None for _, v in settled),
    )
