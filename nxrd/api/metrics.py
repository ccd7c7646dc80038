"""The opt-in Prometheus endpoint: per-workload state, restarts, CPUs, CPU time, throttling,
pressure, memory, events, SLO and GPU use, in Prometheus' naming conventions (ratios, not
percent, and `quantile` labels), nxrd's build and its own process figures.

Families are built at scrape time from the same status documents `nxrctl status` shows
(collect() is pure over them). The endpoint is served from nxrd's own loop by readiness
(connections.py), like the API: a scraper that stalls holds only its own connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from nxrd import __version__
from nxrd.api.connections import BACKLOG, Connections, Peer
from nxrd.errors import NxrError
from nxrd.model.replicas import group_of
from nxrd.model.units import parse_cpu_list
from nxrd.supervisor.states import State

Status = Sequence[Mapping[str, Any]]


class WorkloadCollector(Collector):
    def __init__(
        self,
        source: Callable[[], Status],
        controller: Callable[[], Mapping[str, Any]],
        gpus: Callable[[], Status] = list,
    ) -> None:
        self.source, self.controller, self.gpus = source, controller, gpus

    def collect(self) -> Iterator[Metric]:
        return iter(
            [
                build_info(),
                *families(self.source()),
                *controller_families(self.controller()),
                *gpu_families(self.gpus()),
                *front_families(self.source()),
                *net_families(self.source()),
            ]
        )


def front_families(workloads: Status) -> list[Metric]:
    """Per front (label `workload`: the served workload) and per replica: what HAProxy
    counts (docs/front.md); counters start again when the front's worker is replaced."""
    queued = GaugeMetricFamily(
        "nxr_front_queued", "Requests waiting for a replica", labels=["workload"]
    )
    admitted = CounterMetricFamily(
        "nxr_front_admitted", "Requests let into the queue or to a replica", labels=["workload"]
    )
    shed = CounterMetricFamily(
        "nxr_front_shed",
        "Requests refused at once (429): the queue was full",
        labels=["workload", "priority"],
    )
    late = CounterMetricFamily(
        "nxr_front_late",
        "Requests dropped (503): no replica took them within the queue timeout",
        labels=["workload"],
    )
    wait = GaugeMetricFamily(
        "nxr_front_queue_seconds",
        "Mean time in the queue of the last 1024 requests (HAProxy's qtime)",
        labels=["workload"],
    )
    inflight = GaugeMetricFamily(
        "nxr_replica_inflight", "Requests at the replica now", labels=["workload", "replica"]
    )
    waits = HistogramMetricFamily(
        "nxr_front_queue_wait_seconds",
        "Time requests waited in the front's queue, by the replica that took them (empty: "
        "dropped at the queue timeout) and priority, since nxrd started",
        labels=["workload", "replica", "priority"],
    )
    for w in workloads:
        name = str(w["name"])
        if isinstance(f := w.get("front"), Mapping):
            group = [group_of(name)]
            queued.add_metric(group, float(f["queued"]))
            admitted.add_metric(group, float(f["admitted"]))
            for priority, n in dict(f["shed_by_priority"]).items():
                shed.add_metric([*group, priority], float(n))
            late.add_metric(group, float(f["late"]))
            wait.add_metric(group, float(f["queue_seconds_avg"]))
            histogram = dict(f.get("queue_wait", {}))
            bounds = histogram.pop("le", [])
            for key, h in histogram.items():
                replica, _, priority = key.rpartition("/")
                buckets = list(zip(bounds, map(float, h["counts"]), strict=True))
                waits.add_metric([*group, replica, priority], buckets, float(h["sum"]))
        if isinstance(r := w.get("requests"), Mapping):
            inflight.add_metric([group_of(name), name], float(r["inflight"]))
    return [queued, admitted, shed, late, wait, inflight, waits]


def net_families(workloads: Status) -> list[Metric]:
    """Per shaped workload (docs/network.md): its egress ceiling and floor, and what its HTB
    classes counted (counters start again when nxr builds the tree again)."""
    ceiling = GaugeMetricFamily(
        "nxr_workload_net_egress_bits_per_second",
        "Egress ceiling (HTB ceil) on each shaped interface",
        labels=["workload"],
    )
    floor = GaugeMetricFamily(
        "nxr_workload_net_guarantee_bits_per_second",
        "Egress floor (HTB rate) under contention",
        labels=["workload"],
    )
    sent = CounterMetricFamily(
        "nxr_workload_net_sent_bytes", "Bytes sent through its class", labels=["workload"]
    )
    dropped = CounterMetricFamily(
        "nxr_workload_net_dropped_packets",
        "Packets its queue dropped (over its ceiling for too long)",
        labels=["workload"],
    )
    for w in workloads:
        if isinstance(n := w.get("net"), Mapping):
            name = [str(w["name"])]
            ceiling.add_metric(name, float(n["egress_bits"]))
            floor.add_metric(name, float(n["guarantee_bits"]))
            sent.add_metric(name, float(n["sent_bytes"]))
            dropped.add_metric(name, float(n["dropped_packets"]))
    return [ceiling, floor, sent, dropped]


def gpu_families(gpus: Status) -> list[Metric]:
    """Per GPU (labels `gpu`, its index, and `uuid`): the device's utilization and what
    processes of no workload hold; absent while NVML does not answer."""
    util = GaugeMetricFamily(
        "nxr_gpu_utilization_ratio",
        "Share of the last sample period a kernel ran on the GPU (0-1)",
        labels=["gpu", "uuid"],
    )
    other = GaugeMetricFamily(
        "nxr_gpu_other_memory_bytes",
        "GPU memory held by processes that belong to no workload",
        labels=["gpu", "uuid"],
    )
    quarantine = GaugeMetricFamily(
        "nxr_gpu_quarantined",
        "1 while the GPU is quarantined (no placements until released or nxrd restarts)",
        labels=["gpu", "uuid"],
    )
    for g in gpus:
        gpu = [str(g["index"]), str(g["uuid"])]
        if g.get("utilization_percent") is not None:
            util.add_metric(gpu, float(g["utilization_percent"]) / 100)
        if g.get("other_memory_bytes") is not None:
            other.add_metric(gpu, float(g["other_memory_bytes"]))
        quarantine.add_metric(gpu, 1.0 if g.get("quarantined") else 0.0)
    return [util, other, quarantine]


def controller_families(c: Mapping[str, Any]) -> list[Metric]:
    """{"level": int, "actions": {(direction, rung): count}} -> the controller's series."""
    level = GaugeMetricFamily("nxr_controller_level", "The controller's rung (0: static values)")
    level.add_metric([], float(c.get("level", 0)))
    actions = CounterMetricFamily(
        "nxr_controller_actions", "Controller decisions", labels=["direction", "rung"]
    )
    for (direction, rung), n in sorted(dict(c.get("actions", {})).items()):
        actions.add_metric([direction, rung], float(n))
    return [level, actions]


def quantile(percentile: str) -> str:
    """The profile's "p99" as Prometheus writes a quantile: "0.99"."""
    return f"{int(percentile.removeprefix('p')) / 100:g}"


def build_info() -> Metric:
    info = GaugeMetricFamily("nxr_build_info", "nxrd's version (always 1)", labels=["version"])
    info.add_metric([__version__], 1.0)
    return info


def families(workloads: Status) -> list[Metric]:
    labels = ["workload", "class"]
    state = GaugeMetricFamily(
        "nxr_workload_state", "1 for the state the workload is in", labels=[*labels, "state"]
    )
    frozen = GaugeMetricFamily("nxr_workload_frozen", "1 while frozen", labels=labels)
    restarts = CounterMetricFamily("nxr_workload_restarts", "Restarts by nxr", labels=labels)
    cpu = CounterMetricFamily("nxr_workload_cpu_usage_seconds", "CPU time used", labels=labels)
    throttled = CounterMetricFamily(
        "nxr_workload_cpu_throttled_seconds", "Time throttled by cpu.max", labels=labels
    )
    stalled = CounterMetricFamily(
        "nxr_workload_pressure_stalled_seconds",
        "Time some or all tasks stalled on a resource (PSI totals)",
        labels=[*labels, "resource", "kind"],
    )
    memory = GaugeMetricFamily("nxr_workload_memory_bytes", "memory.current", labels=labels)
    limit = GaugeMetricFamily(
        "nxr_workload_memory_limit_bytes", "memory.max (absent when unlimited)", labels=labels
    )
    events = CounterMetricFamily(
        "nxr_workload_memory_events", "memory.events counters", labels=[*labels, "event"]
    )
    cpus = GaugeMetricFamily(
        "nxr_workload_cpus", "CPUs in its cpuset (cpuset.cpus as planned)", labels=labels
    )
    # Prometheus' own name for the label of a latency at a quantile (summaries use it)
    slo = GaugeMetricFamily(
        "nxr_workload_slo_seconds", "Latency target", labels=[*labels, "quantile"]
    )
    latency = GaugeMetricFamily(
        "nxr_workload_latency_seconds",
        "Observed latency at the SLO's quantile",
        labels=[*labels, "quantile"],
    )
    gpu_memory = GaugeMetricFamily(
        "nxr_workload_gpu_memory_bytes",
        "GPU memory its processes hold (NVML's per-process figures)",
        labels=[*labels, "gpu", "uuid"],
    )
    gpu_util = GaugeMetricFamily(
        "nxr_workload_gpu_utilization_ratio",
        "SM utilization of its processes on the GPU (0-1)",
        labels=[*labels, "gpu", "uuid"],
    )
    for w in workloads:
        who = [str(w["name"]), str(w["class"])]
        for s in State:
            state.add_metric([*who, s.value], 1.0 if w["state"] == s.value else 0.0)
        frozen.add_metric(who, 1.0 if w.get("frozen") else 0.0)
        restarts.add_metric(who, float(w.get("restarts", 0)))
        if "cpu_usage_usec" in w:
            cpu.add_metric(who, w["cpu_usage_usec"] / 1e6)
            throttled.add_metric(who, w.get("cpu_throttled_usec", 0) / 1e6)
        for res in ("cpu", "memory", "io"):
            p = w.get(f"{res}_pressure")
            if p is not None:
                stalled.add_metric([*who, res, "some"], p["some_seconds_total"])
                stalled.add_metric([*who, res, "full"], p["full_seconds_total"])
        if w.get("cpus"):
            cpus.add_metric(who, float(len(parse_cpu_list(w["cpus"]))))
        if "memory_current" in w:
            memory.add_metric(who, float(w["memory_current"]))
        if w.get("memory_max") is not None:
            limit.add_metric(who, float(w["memory_max"]))
        for event, count in dict(w.get("memory_events", {})).items():
            events.add_metric([*who, event], float(count))
        if w.get("slo_seconds") is not None:
            q = quantile(str(w["slo_percentile"]))
            slo.add_metric([*who, q], float(w["slo_seconds"]))
            if w.get("latency_seconds") is not None:
                latency.add_metric([*who, q], float(w["latency_seconds"]))
        for u in w.get("gpu_usage", []):
            on = [str(u["gpu"]), str(u.get("uuid") or "")]
            if u.get("memory_bytes") is not None:
                gpu_memory.add_metric([*who, *on], float(u["memory_bytes"]))
            if u.get("utilization_percent") is not None:
                gpu_util.add_metric([*who, *on], float(u["utilization_percent"]) / 100)
    return [
        *(state, frozen, restarts, cpu, throttled, stalled, cpus, memory, limit, events),
        *(slo, latency),
        *(gpu_memory, gpu_util),
    ]


class MetricsServer(Connections):
    """HTTP on a TCP address, each scrape served by readiness from nxrd's loop."""

    def __init__(
        self,
        address: str,
        source: Callable[[], Status],
        controller: Callable[[], Mapping[str, Any]] = dict,
        gpus: Callable[[], Status] = list,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkloadCollector(source, controller, gpus))
        # nxrd's own CPU, memory, descriptors and start time, as every Prometheus client
        # exports them (process_*, python_*)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
            family, kind, proto, _, where = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(where)
                sock.listen(BACKLOG)
            except OSError:
                sock.close()
                raise
        except OSError as e:
            raise NxrError(f"cannot serve metrics on {address}: {e.strerror or e}") from None
        super().__init__(sock, self._respond)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _respond(self, peer: Peer, data: bytes) -> tuple[bytes, bool] | None:
        head, sep, _ = data.partition(b"\r\n\r\n")
        if not sep:
            return None if len(head) <= 8192 else (_http(431, "text/plain", b"too large\n"), True)
        method, _, rest = head.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        if method != b"GET" or target not in (b"/metrics", b"/"):
            return _http(404, "text/plain", b"GET /metrics\n"), True
        return _http(200, CONTENT_TYPE_LATEST, generate_latest(self.registry)), False


def _http(status: int, kind: str, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found", 431: "Request Header Fields Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
