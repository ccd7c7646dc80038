"""Counters to rates, and pressure files, as the kernel writes them."""

from __future__ import annotations

from nxrd.controller.observe import cpu_rates, cpu_sample, pressure, pressure_signals, usage_signals


def stat(u: int, p: int, t: int) -> dict[str, str]:
    """cpu.stat as CgroupFS.read_keyed gives it."""
    fields = {"usage_usec": u, "user_usec": 1, "system_usec": 2, "nr_periods": p}
    return {k: str(v) for k, v in {**fields, "nr_throttled": t, "throttled_usec": 9}.items()}


def test_cpu_percent_of_one_cpu_and_throttled_share_of_periods() -> None:
    a = cpu_sample(10.0, stat(1_000_000, 100, 10))
    b = cpu_sample(12.0, stat(4_000_000, 120, 25))
    assert cpu_rates(a, b) == {"cpu_percent": 150.0, "throttled_percent": 75.0}


def test_no_rate_without_an_interval_or_after_a_counter_restart() -> None:
    a = cpu_sample(10.0, stat(5_000_000, 0, 0))
    assert cpu_rates(None, a) == {}
    assert cpu_rates(a, a) == {}
    assert cpu_rates(a, cpu_sample(11.0, stat(10, 0, 0))) == {}
    # no cpu.max: no periods, never throttled
    assert cpu_rates(a, cpu_sample(11.0, stat(5_500_000, 0, 0))) == {
        "cpu_percent": 50.0,
        "throttled_percent": 0.0,
    }


def test_pressure_file() -> None:
    text = (
        "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n"
        "full avg10=0.25 avg60=0.00 avg300=0.00 total=789\n"
    )
    p = pressure(text)
    assert p["some_avg10"] == 1.5 and p["full_avg10"] == 0.25
    assert p["some_total_usec"] == 123456 and p["full_total_usec"] == 789
    assert pressure("") == {}


def test_signals_from_the_files_of_one_tick() -> None:
    texts = {
        "cpu.pressure": "some avg10=12.50 avg60=1.00 avg300=0.00 total=100\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "memory.pressure": "some avg10=3.00 avg60=0 avg300=0 total=1\n"
        "full avg10=1.50 avg60=0 avg300=0 total=1\n",
        "io.pressure": None,  # a kernel without io accounting for this leaf
    }
    assert pressure_signals(texts) == {
        "cpu_some": 12.5,
        "cpu_full": 0.0,
        "memory_some": 3.0,
        "memory_full": 1.5,
    }
    prev = cpu_sample(10.0, {"usage_usec": "0", "nr_periods": "10", "nr_throttled": "0"})
    texts = {
        "cpu.stat": "usage_usec 250000\nnr_periods 20\nnr_throttled 5\n",
        "memory.current": "1048576\n",
        "memory.events": "low 0\nhigh 4\nmax 1\noom 0\noom_kill 0\noom_group_kill 0\n",
    }
    out, cur = usage_signals(texts, prev, 10.5)
    assert out == {
        "cpu_percent": 50.0,  # 0.25 s of CPU in 0.5 s
        "throttled_percent": 50.0,  # 5 of the 10 periods since the previous tick
        "memory_current": 1048576.0,
        "memory_high_events": 4.0,
        "memory_max_events": 1.0,
        "memory_oom_kill_events": 0.0,
    }
    assert cur is not None and cur.usage_usec == 250000
    # the leaf is gone
    assert usage_signals({}, None, 1.0) == ({}, None) and pressure_signals({}) == {}
