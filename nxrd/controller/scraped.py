"""Latency read from a serving framework's Prometheus endpoint: a histogram's windowed
quantile, or, for frameworks that expose counters only, the windowed mean. Pure: scrape
text and times in, seconds out (nxrd.controller.poll fetches the text)."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from nxrd.controller.histogram import (
    ScrapeError,
    Window,
    families,
    parse_histogram,
    resolution,
)


@dataclass(frozen=True)
class Preset:
    metric: str  # histogram name; for counters, the total-time counter
    scale: float  # seconds per unit of the metric
    count: str | None = None  # counters only: the request counter


PRESETS = {
    # vLLM's request-level histograms: end to end (the whole answer), time to first token
    # (what a chat user waits before text appears), and inter-token latency (its pace)
    "vllm": Preset("vllm:e2e_request_latency_seconds", 1.0),
    "vllm-ttft": Preset("vllm:time_to_first_token_seconds", 1.0),
    "vllm-itl": Preset("vllm:inter_token_latency_seconds", 1.0),
    "tgi": Preset("tgi_request_duration", 1.0),
    "ray-serve": Preset("ray_serve_http_request_latency_ms", 0.001),
    "triton": Preset("nv_inference_request_duration_us", 1e-6, "nv_inference_request_success"),
    "torchserve": Preset("ts_inference_latency_microseconds", 1e-6, "ts_inference_requests_total"),
}


@dataclass
class Scraped:
    """One workload's scraped latency over a window of `seconds`."""

    seconds: float
    metric: str
    labels: dict[str, str]
    scale: float = 1.0
    count: str | None = None  # set: counters only, the windowed mean
    window: Window = field(init=False)
    totals: deque[tuple[float, float, float]] = field(init=False)  # (time, sum, count)

    def __post_init__(self) -> None:
        self.window = Window.of(self.seconds)
        self.totals = deque()

    @classmethod
    def of(
        cls,
        seconds: float,
        metric: str | None,
        preset: str | None,
        labels: dict[str, str],
    ) -> Scraped:
        if preset is not None:
            p = PRESETS[preset]
            return cls(seconds, p.metric, labels, p.scale, p.count)
        assert metric is not None
        return cls(seconds, metric, labels)

    @property
    def kind(self) -> str:
        return "mean" if self.count else "histogram"

    def add(self, now: float, text: str) -> None:
        """One scrape; ScrapeError when the text lacks the series."""
        if self.count is None:
            self.window.add(now, parse_histogram(text, self.metric, self.labels))
            return
        total = _counter(text, self.metric, self.labels)
        n = _counter(text, self.count, self.labels)
        self.totals.append((now, total, n))
        while len(self.totals) > 2 and self.totals[1][0] <= now - self.seconds:
            self.totals.popleft()

    def latency(self, q: float) -> float | None:
        """Seconds: the q-quantile of the window (the mean, for counters); None before two
        scrapes or without requests in the window."""
        if self.count is None:
            value = self.window.quantile(q)
            return None if value is None else value * self.scale
        if len(self.totals) < 2:
            return None
        time_sum = requests = 0.0
        for (_, s0, n0), (_, s1, n1) in itertools.pairwise(self.totals):
            if s1 < s0 or n1 < n0:  # restarted: what it counted since is new
                s0 = n0 = 0.0
            time_sum, requests = time_sum + s1 - s0, requests + n1 - n0
        return None if requests <= 0 else time_sum / requests * self.scale

    def note(self, target: float) -> str | None:
        """What to tell the operator about this source's precision, once."""
        if self.count is not None:
            return (
                f"{self.metric} is a counter: the controller keeps the windowed mean "
                "latency against the target, not a percentile"
            )
        if not self.window.scrapes:
            return None
        bounds = list(self.window.scrapes[-1][1])
        return resolution([b * self.scale for b in bounds], target)


def _counter(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of the series of counter `name` matching labels (with or without _total)."""
    parsed = families(text)
    found, total = False, 0.0
    names = {name, f"{name}_total", name.removesuffix("_total")}
    for fam in parsed:
        for s in fam.samples:
            if s.name in names and all(s.labels.get(k) == v for k, v in labels.items()):
                found, total = True, total + s.value
    if not found:
        raise ScrapeError(f"no counter {name} in the scrape")
    return total
