"""Latency from scraped framework metrics: presets, units, counters-only means, resets."""

from __future__ import annotations

import pytest

from nxrd.controller.histogram import ScrapeError
from nxrd.controller.scraped import Scraped


def ray(n_fast: int, n_slow: int) -> str:
    """Ray Serve's histogram is in milliseconds."""
    total = n_fast + n_slow
    return (
        "# TYPE ray_serve_http_request_latency_ms histogram\n"
        f'ray_serve_http_request_latency_ms_bucket{{route="/a",le="50.0"}} {n_fast}\n'
        f'ray_serve_http_request_latency_ms_bucket{{route="/a",le="500.0"}} {total}\n'
        f'ray_serve_http_request_latency_ms_bucket{{route="/a",le="+Inf"}} {total}\n'
        f'ray_serve_http_request_latency_ms_count{{route="/a"}} {total}\n'
        f'ray_serve_http_request_latency_ms_sum{{route="/a"}} 1.0\n'
    )


def test_a_histogram_preset_in_milliseconds_gives_seconds() -> None:
    s = Scraped.of(10.0, None, "ray-serve", {"route": "/a"})
    s.add(0.0, ray(0, 0))
    assert s.latency(0.99) is None  # one scrape: no window yet
    s.add(1.0, ray(100, 0))
    assert s.latency(0.5) == pytest.approx(0.025)  # half-way into (0, 50 ms]
    assert s.note(0.2) == (
        "the target 0.2s lies inside the bucket (0.05s, 0.5s]: "
        "latency near it is interpolated, not measured"
    )


def triton(duration_us: float, success: float) -> str:
    return (
        "# TYPE nv_inference_request_duration_us counter\n"
        f'nv_inference_request_duration_us{{model="m",version="1"}} {duration_us}\n'
        "# TYPE nv_inference_request_success counter\n"
        f'nv_inference_request_success{{model="m",version="1"}} {success}\n'
    )


def test_counters_only_give_the_windowed_mean_and_say_so() -> None:
    s = Scraped.of(5.0, None, "triton", {"model": "m"})
    assert s.kind == "mean"
    s.add(0.0, triton(1_000_000, 10))
    s.add(1.0, triton(1_000_000 + 20 * 150_000, 30))  # 20 requests of 150 ms
    assert s.latency(0.99) == pytest.approx(0.15)
    s.add(2.0, triton(40 * 50_000, 40))  # restarted: 40 requests of 50 ms since
    assert s.latency(0.99) == pytest.approx((20 * 0.15 + 40 * 0.05) / 60)
    s.add(9.0, triton(40 * 50_000, 40))  # nothing new in the last 5 s
    assert s.latency(0.99) is None
    assert "is a counter: the controller keeps the windowed mean" in (s.note(0.2) or "")


def test_torchserve_counters_and_a_missing_series() -> None:
    text = (
        "# TYPE ts_inference_latency_microseconds counter\n"
        'ts_inference_latency_microseconds{model_name="m"} {v}\n'
        "# TYPE ts_inference_requests_total counter\n"
        'ts_inference_requests_total{model_name="m"} {n}\n'
    )
    s = Scraped.of(30.0, None, "torchserve", {})
    s.add(0.0, text.replace("{v}", "0").replace("{n}", "0"))
    s.add(1.0, text.replace("{v}", "300000").replace("{n}", "3"))
    assert s.latency(0.5) == pytest.approx(0.1)
    with pytest.raises(ScrapeError, match="no counter ts_inference_latency_microseconds"):
        s.add(2.0, "# TYPE other counter\nother 1\n")
    vllm = Scraped.of(30.0, None, "vllm", {})
    with pytest.raises(ScrapeError, match="no histogram vllm:e2e_request_latency_seconds"):
        vllm.add(0.0, "# TYPE other counter\nother 1\n")


def vllm(fast: int, slow: int) -> str:
    """The three request histograms a vLLM server exposes, each with its own figures: TTFT
    fast, inter-token latency faster, the whole answer slow."""
    out = ""
    for name, le in (
        ("vllm:time_to_first_token_seconds", ("0.1", "1.0")),
        ("vllm:inter_token_latency_seconds", ("0.01", "0.1")),
        ("vllm:e2e_request_latency_seconds", ("1.0", "10.0")),
    ):
        out += f"# TYPE {name} histogram\n"
        out += f'{name}_bucket{{model_name="m",le="{le[0]}"}} {fast}\n'
        out += f'{name}_bucket{{model_name="m",le="{le[1]}"}} {fast + slow}\n'
        out += f'{name}_bucket{{model_name="m",le="+Inf"}} {fast + slow}\n'
        out += f'{name}_count{{model_name="m"}} {fast + slow}\n'
    return out


@pytest.mark.parametrize(
    ("preset", "median"), [("vllm", 0.5), ("vllm-ttft", 0.05), ("vllm-itl", 0.005)]
)
def test_the_vllm_presets_read_their_own_histogram(preset: str, median: float) -> None:
    s = Scraped.of(10.0, None, preset, {"model_name": "m"})
    s.add(0.0, vllm(0, 0))
    s.add(1.0, vllm(100, 0))
    assert s.latency(0.5) == pytest.approx(median)  # half-way into its first bucket
