"""Pushed latencies: exact percentiles over a sliding window."""

from __future__ import annotations

from nxrd.controller.samples import SampleWindow


def test_nearest_rank_percentiles_over_the_window() -> None:
    w = SampleWindow(10.0)
    for i in range(1, 101):  # 1..100 ms at t = 0..9.9
        w.add(i / 10, i / 1000)
    assert w.percentile(0.99, 10.0) == 0.099  # nearest rank 99 of 100
    assert w.percentile(0.5, 10.0) == 0.050
    assert w.percentile(1.0, 10.0) == 0.1
    assert w.percentile(0.01, 10.5) == 0.006  # t <= 0.5 (1-5 ms) has left the window
    assert w.percentile(0.99, 30.0) is None  # all expired: no data, not zero


def test_the_limit_bounds_memory_and_bad_values_are_ignored() -> None:
    w = SampleWindow(60.0, limit=3)
    for v in (1.0, float("nan"), -1.0, 2.0, 3.0, 4.0):
        w.add(0.0, v)
    assert len(w) == 3 and w.dropped == 1
    assert w.percentile(0.0001, 1.0) == 2.0


def test_the_requests_since_a_change_are_those_that_started_after_it() -> None:
    """A request queued before a rung change and answered after it saw the old rung."""
    w = SampleWindow(seconds=5.0)
    w.add(10.0, 0.5)  # answered after the change at 9.8, but started at 9.5
    w.add(10.0, 0.1)  # started at 9.9
    w.add(10.1, 0.05)  # started at 10.05
    assert w.percentile_since(0.99, 9.8, 10.1) == 0.1
    assert w.percentile_since(0.99, 9.4, 10.1) == 0.5
    assert w.percentile_since(0.99, 10.1, 10.1) is None  # none yet: the law holds
