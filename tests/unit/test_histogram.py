"""Windowed histogram quantiles, checked against hand-computed histogram_quantile() values."""

from __future__ import annotations

import math

import pytest

from nxrd.controller.histogram import (
    ScrapeError,
    Window,
    increase,
    parse_histogram,
    quantile,
    resolution,
)

INF = math.inf


def text(counts: dict[str, int], model: str = "m") -> str:
    lines = ["# TYPE lat_seconds histogram"]
    lines += [f'lat_seconds_bucket{{le="{le}",model="{model}"}} {n}' for le, n in counts.items()]
    total = counts["+Inf"]
    lines += [
        f'lat_seconds_count{{model="{model}"}} {total}',
        f'lat_seconds_sum{{model="{model}"}} 1',
    ]
    return "\n".join(lines) + "\n"


def test_parse_picks_the_series_by_labels_and_sums_the_rest() -> None:
    both = text({"0.1": 1, "+Inf": 2}, "a") + text({"0.1": 3, "+Inf": 4}, "b").split("\n", 1)[1]
    assert parse_histogram(both, "lat_seconds", {"model": "b"}) == {0.1: 3, INF: 4}
    assert parse_histogram(both, "lat_seconds", {}) == {0.1: 4, INF: 6}
    with pytest.raises(ScrapeError, match=r'no histogram lat_seconds\{model="c"\}'):
        parse_histogram(both, "lat_seconds", {"model": "c"})


def test_quantile_interpolates_like_prometheus() -> None:
    # 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.2], 2 in (0.2, 0.5]
    b = {0.1: 4, 0.2: 8, 0.5: 10, INF: 10}
    assert quantile(0.5, b) == pytest.approx(0.125)  # rank 5: 1/4 into (0.1, 0.2]
    assert quantile(0.9, b) == pytest.approx(0.35)  # rank 9: half into (0.2, 0.5]
    assert quantile(0.2, b) == pytest.approx(0.05)  # first bucket starts at 0
    assert quantile(0.99, {0.1: 1, INF: 10}) == 0.1  # in +Inf: the largest finite bound
    assert quantile(0.99, {0.1: 0, INF: 0}) is None
    assert quantile(0.5, {0.1: 5, 0.2: 4, INF: 5}) == pytest.approx(0.05)  # non-monotonic fixed


def test_increase_handles_counter_resets() -> None:
    assert increase({0.1: 5, INF: 9}, {0.1: 7, INF: 12}) == {0.1: 2, INF: 3}
    assert increase({0.1: 5, INF: 9}, {0.1: 1, INF: 2}) == {0.1: 1, INF: 2}  # restarted


def test_window_uses_only_recent_observations() -> None:
    w = Window.of(10.0)
    w.add(0.0, {0.1: 0, 0.5: 0, INF: 0})
    assert w.quantile(0.99) is None  # one scrape: no interval yet
    w.add(5.0, {0.1: 100, 0.5: 100, INF: 100})  # fast requests
    assert w.quantile(0.99) == pytest.approx(0.099)
    w.add(20.0, {0.1: 100, 0.5: 200, INF: 200})  # then 100 slow ones
    w.add(25.0, {0.1: 100, 0.5: 200, INF: 200})
    # The window (15 s, 25 s] holds only the slow ones (baseline: the scrape at 5 s).
    assert w.quantile(0.5) == pytest.approx(0.3)
    w.add(26.0, {0.1: 1, 0.5: 1, INF: 1})  # the server restarted
    assert w.counts() == {0.1: 1, 0.5: 101, INF: 101}


def test_resolution_is_reported_when_the_target_falls_inside_a_bucket() -> None:
    assert resolution([0.1, 0.2, INF], 0.2) is None
    assert resolution([0.1, 0.25, INF], 0.2) == (
        "the target 0.2s lies inside the bucket (0.1s, 0.25s]: "
        "latency near it is interpolated, not measured"
    )
    assert "above the largest finite bucket (0.25s)" in str(resolution([0.1, 0.25, INF], 1.0))
