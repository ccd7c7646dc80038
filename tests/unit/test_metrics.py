"""The Prometheus endpoint: names, labels and values a scraper sees."""

from __future__ import annotations

import select
import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from nxrd import __version__
from nxrd.api.metrics import MetricsServer

DOC = {
    "name": "chat",
    "class": "latency-critical",
    "state": "ready",
    "frozen": False,
    "restarts": 2,
    "cpu_usage_usec": 1_500_000,
    "cpu_throttled_usec": 250_000,
    "memory_current": 1 << 20,
    "memory_max": 4 << 30,
    "memory_events": {"oom_kill": 1, "high": 0},
    "cpu_pressure": {"some_seconds_total": 0.5, "full_seconds_total": 0.25},
    "cpus": "2-3",
    "slo_percentile": "p99",
    "slo_seconds": 0.2,
    "latency_seconds": None,
}


def scrape(
    docs: list[dict[str, object]], controller: dict[str, object] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    server = MetricsServer("127.0.0.1:0", lambda: docs, lambda: controller or {})
    port = server.port
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            if select.select([server.fileno()], [], [], 0.05)[0]:
                server.serve_ready()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        done.set()
        t.join()
        server.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_scrape() -> None:
    got = scrape([DOC])
    who = (("class", "latency-critical"), ("workload", "chat"))
    assert got[("nxr_workload_state", tuple(sorted((*who, ("state", "ready")))))] == 1.0
    assert got[("nxr_workload_state", tuple(sorted((*who, ("state", "failed")))))] == 0.0
    assert got[("nxr_workload_restarts_total", who)] == 2.0
    assert got[("nxr_workload_cpu_usage_seconds_total", who)] == 1.5
    assert got[("nxr_workload_cpu_throttled_seconds_total", who)] == 0.25
    cpu_some = tuple(sorted((*who, ("resource", "cpu"), ("kind", "some"))))
    assert got[("nxr_workload_pressure_stalled_seconds_total", cpu_some)] == 0.5
    assert got[("nxr_workload_memory_bytes", who)] == 1 << 20
    assert got[("nxr_workload_memory_limit_bytes", who)] == 4 << 30
    oom = tuple(sorted((*who, ("event", "oom_kill"))))
    assert got[("nxr_workload_memory_events_total", oom)] == 1.0
    # Prometheus' label for a latency at a quantile, as its summaries write it
    assert got[("nxr_workload_slo_seconds", tuple(sorted((*who, ("quantile", "0.99")))))] == 0.2
    assert not any(name == "nxr_workload_latency_seconds" for name, _ in got)  # none observed
    assert got[("nxr_workload_cpus", who)] == 2.0
    assert got[("nxr_build_info", (("version", __version__),))] == 1.0
    # nxrd's own process, from prometheus_client's standard collectors
    assert got[("process_resident_memory_bytes", ())] > 0
    assert any(name == "python_info" for name, _ in got)


def test_an_observed_latency_is_at_the_slos_quantile() -> None:
    got = scrape([{**DOC, "slo_percentile": "p95", "latency_seconds": 0.15}])
    who = (("class", "latency-critical"), ("workload", "chat"))
    assert (
        got[("nxr_workload_latency_seconds", tuple(sorted((*who, ("quantile", "0.95")))))] == 0.15
    )


def test_controller_series() -> None:
    got = scrape([], {"level": 2, "actions": {("up", "weight"): 1, ("up", "cap-75%"): 1}})
    assert got[("nxr_controller_level", ())] == 2.0
    assert got[("nxr_controller_actions_total", (("direction", "up"), ("rung", "cap-75%")))] == 1.0


def test_a_stopped_workload_has_state_but_no_counters() -> None:
    doc = {"name": "b", "class": "batch", "state": "stopped", "restarts": 0, "memory_max": None}
    got = scrape([doc])
    assert not any(name == "nxr_workload_cpu_usage_seconds_total" for name, _ in got)
    assert not any(name == "nxr_workload_memory_limit_bytes" for name, _ in got)


def test_taken_port_is_one_line_error() -> None:
    first = MetricsServer("127.0.0.1:0", list)
    try:
        port = first.port
        try:
            MetricsServer(f"127.0.0.1:{port}", list)
        except Exception as e:
            assert str(e).startswith(f"cannot serve metrics on 127.0.0.1:{port}: ")
            assert "\n" not in str(e)
        else:
            raise AssertionError("a taken port was accepted")
    finally:
        first.close()


def test_a_stalled_scraper_holds_only_its_own_connection() -> None:
    """Any local user who can reach the metrics port: before, a client that sent nothing
    held nxrd's loop for a second per request."""
    import socket
    import time

    server = MetricsServer("127.0.0.1:0", lambda: [DOC])
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"GET /metr")  # and nothing more
    try:
        server.ready(server.fileno())  # the loop accepts it: no wait on its request
        assert len(server.conns) == 1
        ok = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        ok.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        server.ready(server.fileno())
        while not select.select([ok], [], [], 0)[0]:  # the loop's passes, until answered
            readable = select.select(list(server.conns), [], [], 1)[0]
            for fd in readable:
                server.ready(fd)
        answer = b""
        while chunk := ok.recv(1 << 20):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"nxr_workload_state" in answer
        assert len(server.conns) == 1  # the stalled one, still waiting alone
        server.expire(time.monotonic() + 3)
        assert server.conns == {}
        ok.close()
    finally:
        stalled.close()
        server.close()
