from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nxrd.model.units import (
    format_cpu_list,
    format_duration,
    format_size,
    parse_cpu_list,
    parse_cpu_quota,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", 4 << 30),
        ("4GiB", 4 << 30),
        ("512MiB", 512 << 20),
        ("512m", 512 << 20),
        ("1.5G", 3 << 29),
        ("100", 100),
        (4096, 4096),
        ("2T", 2 << 40),
    ],
)
def test_sizes_are_binary_like_systemd_and_cgroupfs(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4GB", "4Gi", "four", "-1", "", True, 1.5, "1e3G"])
def test_ambiguous_or_malformed_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_gb_error_says_what_to_write() -> None:
    with pytest.raises(ValueError, match=r'write "4G" or "4GiB"'):
        parse_size("4GB")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        ("1m30s", 90),
        (3, 3.0),
        ("250us", 0.00025),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "ten seconds", "5 minutes", "", "s", "1x", -1, False])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cpu_lists_parse_like_the_kernel() -> None:
    assert parse_cpu_list("2-3,6") == frozenset({2, 3, 6})
    assert parse_cpu_list([1, 5]) == frozenset({1, 5})
    for bad in ["3-2", "a", "1,,2", "", [], [-1], "0-9999999"]:
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


@given(st.sets(st.integers(0, 300), min_size=1))
def test_cpu_list_format_round_trips(cpus: set[int]) -> None:
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_cpu_list_format_is_the_kernels_canonical_form() -> None:
    assert format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_cpu_quota() -> None:
    assert parse_cpu_quota("150%") == 1.5
    assert parse_cpu_quota(2) == 2.0
    for bad in ["150", "x%", "0%", "nan%", True]:
        with pytest.raises(ValueError):
            parse_cpu_quota(bad)


def test_readable_forms() -> None:
    assert format_size(4 << 30) == "4G"
    assert format_size(2016 << 30) == "2016G"
    assert format_size(1536 << 20) == "1536M"
    assert format_duration(0.5) == "500ms"
    assert format_duration(90) == "1m30s"
    assert format_duration(300) == "5m"


@pytest.mark.parametrize("text", ["1" * 400 + "T", "2000P", 1 << 61, "1e400"])
def test_absurd_sizes_are_refused_not_crashed_on(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, "9" * 400 + "s"])
def test_non_finite_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
