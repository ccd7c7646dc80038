"""Counters to rates, and pressure files, as the kernel writes them."""

from __future__ import annotations

from nxrd.observe import cpu_rates, cpu_sample, pressure


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
