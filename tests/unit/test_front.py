"""The front's configuration, run by the real HAProxy (Debian's haproxy, installed by
scripts/setup.sh) in front of test replicas on this host: caps, the queue's bound, the
queue's deadline and priorities hold as the profile says."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from nxrd.api.metrics import WorkloadCollector
from nxrd.cli.format import status_table
from nxrd.controller.push import PushReceiver
from nxrd.daemon.queue_waits import Waits
from nxrd.errors import KernelError, ProfileError
from nxrd.front.admin import FrontAdmin, FrontError, figures
from nxrd.front.render import Server, render
from nxrd.kernel.linux_runtime import can_start_front, write_front_files
from nxrd.model.paths import FRONT_CONFIG as CONFIG
from nxrd.model.paths import FRONT_SOCKET
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES


def registry(status: list[dict[str, object]]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(WorkloadCollector(lambda: status, dict))
    return reg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """An HTTP server that takes `delay` per request and records what it saw."""

    def __init__(self, delay: float) -> None:
        self.delay, self.inflight, self.most, self.order = delay, 0, 0, []
        self.lock = threading.Lock()
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with replica.lock:
                    replica.inflight += 1
                    replica.most = max(replica.most, replica.inflight)
                    replica.order.append(self.path)
                time.sleep(replica.delay if self.path != "/health" else 0)
                with replica.lock:
                    replica.inflight -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Where a test's front logs its requests: a directory HAProxy's worker, which runs as
    the haproxy user, may enter, as /run/nxr (pytest's are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="nxr-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@contextlib.contextmanager
def front(
    tmp: Path, serve: str, replicas: list[Replica], ready: str = "", latency: str = ""
) -> Iterator[tuple[int, int]]:
    """HAProxy with the configuration nxr renders for `serve`, in front of the replicas:
    its port and its master's pid. It logs its requests to `latency`, if given."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed: bash scripts/setup.sh installs it")
    port = free_port()
    profile = parse_profile(
        f'[workloads.chat]\ncommand = ["serve"]\nport = 9000\nreplicas = {len(replicas)}\n'
        f"cpus = 1\nserve = {{port = {port}, {serve}}}\n{ready}"
    )
    servers = [Server(f"chat.{i}", r.port) for i, r in enumerate(replicas)]
    write_front_files(tmp, render("chat", profile.workloads["chat.0"], servers))
    proc = subprocess.Popen(
        ["haproxy", "-W", "-db", "-f", CONFIG],
        cwd=tmp,
        env=os.environ | {"NXR_LATENCY_SOCKET": latency or str(tmp / "nobody.sock")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                if (tmp / FRONT_SOCKET).exists():
                    break
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for r in replicas:
            r.server.shutdown()


def get(port: int, path: str = "/", priority: str | None = None) -> tuple[int, str | None, float]:
    """Status, Retry-After and seconds taken of one request through the front."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"X-Priority": priority} if priority else {})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer.status, answer.getheader("Retry-After"), time.monotonic() - began


def burst(port: int, n: int, **kw: str) -> list[tuple[int, str | None, float]]:
    out: list[tuple[int, str | None, float]] = [(0, None, 0.0)] * n

    def one(i: int) -> None:
        out[i] = get(port, f"/{i}", **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_no_replica_ever_has_more_requests_than_its_cap(tmp_path: Path) -> None:
    replicas = [Replica(0.05), Replica(0.05)]
    with front(tmp_path, 'inflight = 2, queue = 100, queue_timeout = "10s"', replicas) as (port, _):
        answers = burst(port, 40)
    assert [a[0] for a in answers] == [200] * 40
    assert [r.most for r in replicas] == [2, 2]  # both used, neither over its cap
    assert sum(len(r.order) for r in replicas) == 40


def test_past_the_queue_requests_are_refused_at_once_with_retry_after(tmp_path: Path) -> None:
    replica = Replica(1.0)
    serve = 'inflight = 1, queue = 2, queue_timeout = "10s", retry_after = 3'
    with front(tmp_path, serve, [replica]) as (port, _):
        answers = burst(port, 6)
    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    assert len(served) == 3  # one in flight, two queued
    assert [(a[0], a[1]) for a in refused] == [(429, "3")] * 3
    assert all(a[2] < 0.5 for a in refused)  # refused at once, not after a wait
    assert replica.most == 1


def test_a_request_that_waited_past_the_queue_timeout_is_dropped_not_served_late(
    tmp_path: Path,
) -> None:
    replica = Replica(1.0)
    with front(tmp_path, 'inflight = 1, queue = 10, queue_timeout = "200ms"', [replica]) as (
        port,
        _,
    ):
        answers = sorted(burst(port, 3), key=lambda a: a[2])
    assert [(a[0], a[1]) for a in answers] == [(503, "1"), (503, "1"), (200, None)]
    assert all(0.15 < a[2] < 0.8 for a in answers[:2])
    assert len(replica.order) == 1  # the dropped ones never reached it


def test_high_priority_requests_leave_the_queue_before_low_ones(tmp_path: Path) -> None:
    replica = Replica(0.3)
    with front(tmp_path, 'inflight = 1, queue = 20, queue_timeout = "20s"', [replica]) as (port, _):
        blocker = threading.Thread(target=get, args=(port, "/first"))
        blocker.start()
        time.sleep(0.1)
        threads = []
        for i in range(6):  # low, high, low, high...: all queued behind the first
            priority = "batch" if i % 2 == 0 else "high"
            t = threading.Thread(target=get, args=(port, f"/{priority}{i}", priority))
            t.start()
            threads.append(t)
            time.sleep(0.02)
        for t in [blocker, *threads]:
            t.join()
    after = [p.strip("/0123456789") for p in replica.order if p != "/health"][1:]
    assert after == ["high"] * 3 + ["batch"] * 3


SERVED = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 2
replicas = 2
port = 18000
ready = {http = "http://127.0.0.1:18000/health"}
slo = {p99 = "250ms", source = {push = true}}
serve = {port = 18080}
"""


def test_a_served_workload_gets_a_front_on_the_reserved_cpus_over_its_replicas() -> None:
    profile = parse_profile(SERVED)
    assert list(profile.workloads) == ["chat.0", "chat.1", "chat.front"]
    plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    fr = plan.workload("chat.front")
    assert (fr.cgroup, fr.cpus, fr.exclusive) == ("latency-critical/chat.front", "0,16", False)
    assert fr.cpus == plan.reserved_cpus
    assert profile.workloads["chat.front"].command[0] == "haproxy"
    config = fr.front_config or ""
    # the defaults: in flight = the replica's cpus, queue = in flight x replicas, deadline
    # = the SLO's target; each replica checked at its own port's /health
    assert (
        "    server chat.0 127.0.0.1:18000 maxconn 2 check inter 1000ms"
        " observe layer4 error-limit 1 on-error mark-down\n"
    ) in config
    assert (
        "    server chat.1 127.0.0.1:18001 maxconn 2 check inter 1000ms"
        " observe layer4 error-limit 1 on-error mark-down\n"
    ) in config
    assert "if { queue(chat) ge 4 }" in config
    assert "    timeout queue 250ms\n" in config
    assert "http-check send meth GET uri /health" in config
    assert plan.workload("chat.0").front_config is None


NO_PORT = SERVED.replace("port = 18000\n", "").replace(
    'ready = {http = "http://127.0.0.1:18000/health"}\n', ""
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (NO_PORT, "workloads.chat.serve: the front needs port"),
        (SERVED.replace("port = 18080", "port = 18001"), "workloads.chat.serve.port: port 18001"),
        (SERVED.replace("port = 18080}", "port = 18080, queue = 0}"), "workloads.chat.serve.queue"),
    ],
)
def test_a_front_that_cannot_work_is_a_clear_error(text: str, said: str) -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(text)
    assert any(line.startswith(said) for line in e.value.lines()), e.value.lines()


def test_a_replica_taken_out_of_rotation_gets_no_request_and_its_queue_goes_on(
    tmp_path: Path,
) -> None:
    replicas = [Replica(0.2), Replica(0.2)]
    serve = 'inflight = 1, queue = 20, queue_timeout = "20s"'
    with front(tmp_path, serve, replicas) as (port, _):
        admin = FrontAdmin(tmp_path / FRONT_SOCKET)
        admin.set_state("chat", "chat.0", "maint")
        answers = burst(port, 8)
        assert [a[0] for a in answers] == [200] * 8
        assert (len(replicas[0].order), len(replicas[1].order)) == (0, 8)
        rows = {r["svname"]: r for r in admin.stats() if r["pxname"] == "chat"}
        assert (rows["chat.0"]["status"], rows["chat.1"]["status"]) == ("MAINT", "no check")
        assert rows["chat.1"]["stot"] == "8"

        # back in rotation; then out while requests wait: none is lost, the other serves them
        admin.set_state("chat", "chat.0", "ready")
        out: list[tuple[int, str | None, float]] = []
        waiting = threading.Thread(target=lambda: out.extend(burst(port, 10)))
        waiting.start()
        time.sleep(0.3)
        admin.set_state("chat", "chat.0", "maint")
        waiting.join()
        assert [a[0] for a in out] == [200] * 10
        with pytest.raises(FrontError, match="No such server"):
            admin.set_state("chat", "chat.9", "ready")
    with pytest.raises(FrontError, match="front at"):
        admin.stats()  # HAProxy gone


def test_a_reload_adds_a_replica_without_dropping_a_request_in_flight_or_queued(
    tmp_path: Path,
) -> None:
    """What nxrd does when replicas change (daemon/fronts.py): the new configuration
    written, SIGUSR2 to HAProxy's master; the old worker finishes what it holds."""
    first, second = Replica(0.5), Replica(0.5)
    serve = 'inflight = 1, queue = 20, queue_timeout = "20s"'
    with front(tmp_path, serve, [first]) as (port, master):
        admin = FrontAdmin(tmp_path / FRONT_SOCKET)
        old_worker = admin.worker()
        held: list[tuple[int, str | None, float]] = []
        waiting = threading.Thread(target=lambda: held.extend(burst(port, 4)))
        waiting.start()
        time.sleep(0.2)  # one at the replica, three queued
        profile = parse_profile(
            f'[workloads.chat]\ncommand = ["serve"]\nport = 9000\nreplicas = 2\ncpus = 1\n'
            f"serve = {{port = {port}, {serve}}}\n"
        )
        servers = [Server("chat.0", first.port), Server("chat.1", second.port)]
        (tmp_path / CONFIG).write_text(render("chat", profile.workloads["chat.0"], servers))
        os.kill(master, signal.SIGUSR2)
        for _ in range(100):
            with contextlib.suppress(FrontError):
                if admin.worker() != old_worker:
                    break
            time.sleep(0.05)
        after = burst(port, 4)
        waiting.join()
    assert [a[0] for a in held] == [200] * 4  # accepted before the reload: all answered
    assert [a[0] for a in after] == [200] * 4
    assert len(second.order) >= 2  # the new worker sends to the new replica


def test_a_front_that_cannot_start_says_why_and_the_fix(tmp_path: Path) -> None:
    config = render("chat", parse_profile(SERVED).workloads["chat.0"], [Server("chat.0", 18000)])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config.replace("127.0.0.1:18080", f"127.0.0.1:{port}")
        with pytest.raises(KernelError) as e:
            can_start_front("chat.front", config, os.environ["PATH"])
    assert str(e.value) == (
        f"cannot start chat.front: 127.0.0.1:{port} is in use by another program "
        f"(ss -ltnp 'sport = :{port}' names it); free it or choose another serve.port"
    )
    can_start_front("chat.front", config, os.environ["PATH"])  # freed
    with pytest.raises(KernelError, match=r"haproxy is not installed \(apt install haproxy"):
        can_start_front("chat.front", config, str(tmp_path))  # a PATH without it


def test_what_the_front_counts_is_read_back_through_its_runtime_api(tmp_path: Path) -> None:
    replica = Replica(1.0)
    serve = 'inflight = 1, queue = 1, queue_timeout = "20s"'
    with front(tmp_path, serve, [replica]) as (port, _):
        admin = FrontAdmin(tmp_path / FRONT_SOCKET)
        first = threading.Thread(target=burst, args=(port, 2))  # one in flight, one queued
        first.start()
        time.sleep(0.3)
        refused = [get(port, "/x", p)[0] for p in ("batch", "batch", "high", "")]
        assert refused == [429] * 4
        shed = admin.counted("chat.shed")
        seen = figures("chat", admin.stats(), shed)
        first.join()
    assert seen["chat.front"] == {
        "queued": 1,
        "queued_max": 1,
        "admitted": 2,
        "shed": 4,
        "shed_by_priority": {"high": 1, "low": 2, "normal": 1},
        "late": 0,
        "queue_seconds_avg": 0.0,
    }
    assert seen["chat.0"] == {"inflight": 1, "requests": 1, "rotation": "no check"}
    assert set(seen) == {"chat.front", "chat.0"}

    # as status and metrics show them
    status = [
        {"name": n, "class": "interactive", "state": "ready", "cpus": "1", "restarts": 0}
        | ({"front": f} if n == "chat.front" else {"requests": f})
        for n, f in seen.items()
    ]
    table = status_table(status).splitlines()
    assert table[1].split()[:3] == ["chat", "interactive", "2/2"]
    assert table[1].endswith("front: 1 in flight, 1 queued, 4 shed, 0 late")
    text = generate_latest(registry(status)).decode()
    assert 'nxr_front_shed_total{priority="low",workload="chat"} 2.0' in text
    assert 'nxr_front_queued{workload="chat"} 1.0' in text
    assert 'nxr_replica_inflight{replica="chat.0",workload="chat"} 1.0' in text


def test_each_request_is_logged_to_nxrd_with_its_queue_wait(tmp_path: Path, run_dir: Path) -> None:
    """Queue waits per priority as the metrics endpoint's histogram and status's p99; each
    answered request's latency, queue included, for slo.source.front."""
    latency = str(run_dir / "latency.sock")
    rx = PushReceiver(latency, owner_of=lambda pid: "chat.front")
    replica = Replica(0.6)
    serve = 'inflight = 1, queue = 2, queue_timeout = "20s"'
    try:
        with front(tmp_path, serve, [replica], latency=latency) as (port, _):
            # one in flight, then a high and a low one queued (the high one goes first),
            # then one refused
            threads = [threading.Thread(target=get, args=(port, "/0"))]
            threads[0].start()
            time.sleep(0.2)
            for p in ("low", "high"):
                threads.append(threading.Thread(target=get, args=(port, f"/{p}", p)))
                threads[-1].start()
                time.sleep(0.1)
            assert get(port, "/x")[0] == 429
            for t in threads:
                t.join()
            time.sleep(0.2)  # the last line's datagram
            logged = rx.drain().requests
    finally:
        rx.close()
    assert all(f == "chat.front" for f, _ in logged)
    got = sorted((r.priority, r.server or "", r.status) for _, r in logged)
    assert got == [
        ("high", "chat.0", 200),
        ("low", "chat.0", 200),
        ("normal", "", 429),
        ("normal", "chat.0", 200),
    ]
    by = {(r.priority, r.status): r for _, r in logged}
    assert by["normal", 429].wait is None
    assert by["normal", 200].wait == 0.0 and 0.6 <= by["normal", 200].seconds < 0.8
    assert 0.2 <= by["high", 200].wait < 0.5  # behind the first only, though it came later
    assert 0.9 <= by["low", 200].wait < 1.3
    assert 1.5 <= by["low", 200].seconds < 2.0  # arrival to answer: queue and service

    waits = Waits()
    for _, r in logged:
        waits.add(100.0, r)
    seen = waits.figures(100.0)
    assert seen["queue_wait_p99"] == by["low", 200].wait
    figures_ = {"queued": 0, "admitted": 3, "shed": 1, "late": 0, "queue_seconds_avg": 0.3}
    status = [
        {"name": "chat.0", "class": "interactive", "state": "ready", "cpus": "1"}
        | {"restarts": 0, "requests": {"inflight": 0, "requests": 3, "rotation": "UP"}},
        {"name": "chat.front", "class": "interactive", "state": "ready", "cpus": "0"}
        | {"restarts": 0, "front": figures_ | {"shed_by_priority": {"normal": 1}} | seen},
    ]
    table = status_table(status).splitlines()
    assert table[1].endswith(f"queue wait p99 {by['low', 200].wait * 1000:.0f} ms")
    text = generate_latest(registry(status)).decode()
    bucket = 'nxr_front_queue_wait_seconds_bucket{le="%s",priority="%s",replica="chat.0",workload="chat"}'
    assert f"{bucket % ('0.001', 'normal')} 1.0" in text
    assert f"{bucket % ('0.1', 'high')} 0.0" in text
    assert f"{bucket % ('0.5', 'high')} 1.0" in text
    assert f"{bucket % ('0.5', 'low')} 0.0" in text
    assert f"{bucket % ('2.5', 'low')} 1.0" in text
    assert f"{bucket % ('+Inf', 'low')} 1.0" in text
    assert 'nxr_front_queue_wait_seconds_count{priority="normal",replica="chat.0"' in text
    assert 'replica=""' not in text  # the refused request never queued


def test_a_priority_held_back_is_refused_and_a_lowered_cap_holds_live(tmp_path: Path) -> None:
    """The controls a controller steers through the runtime API (docs/front.md)."""
    replica = Replica(0.2)
    with front(tmp_path, 'inflight = 4, queue = 50, queue_timeout = "20s"', [replica]) as (
        port,
        _,
    ):
        admin = FrontAdmin(tmp_path / FRONT_SOCKET)
        admin.hold("low", True)
        admin.hold("low", True)  # twice is once
        assert get(port, "/a", "batch")[:2] == (503, "1")
        assert get(port, "/b", "high")[0] == get(port, "/c")[0] == 200
        assert admin.counted("chat.held") == {"low": 1}
        admin.hold("low", False)
        assert get(port, "/d", "batch")[0] == 200

        assert [a[0] for a in burst(port, 12)] == [200] * 12
        assert replica.most == 4
        admin.set_inflight("chat", "chat.0", 1)
        replica.most = 0
        assert [a[0] for a in burst(port, 6)] == [200] * 6
        assert replica.most == 1


def test_low_priority_may_fill_only_half_the_queue(tmp_path: Path) -> None:
    replica = Replica(1.0)
    serve = 'inflight = 1, queue = 4, queue_timeout = "20s"'
    sent = ["high", "batch", "batch", "batch", "", "high", ""]  # "": no priority header
    out: dict[int, int] = {}
    with front(tmp_path, serve, [replica]) as (port, _):

        def send(i: int) -> None:
            out[i] = get(port, f"/{i}", sent[i] or None)[0]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(sent))]
        for t in threads:  # one at a time, in this order
            t.start()
            time.sleep(0.15)
        for t in threads:
            t.join()
    # in flight: the first; queued: two batch (half the queue), the third refused; then
    # normal and high fill it, and the last normal is refused
    assert [out[i] for i in range(len(sent))] == [200, 200, 200, 429, 200, 200, 429]


def test_a_replica_that_refuses_connections_costs_no_request(tmp_path: Path) -> None:
    """One that just died, before nxrd or a health check took it out: redispatched."""
    gone, alive = Replica(0.05), Replica(0.05)
    with front(tmp_path, 'inflight = 1, queue = 20, queue_timeout = "20s"', [gone, alive]) as (
        port,
        _,
    ):
        gone.server.shutdown()
        gone.server.server_close()  # its port now refuses connections
        answers = [get(port, f"/{i}")[0] for i in range(6)]
    assert answers == [200] * 6
    assert len(alive.order) == 6


def test_under_load_a_replica_that_just_died_is_out_at_its_first_refusal(tmp_path: Path) -> None:
    """leastconn prefers the replica with the fewest requests: a dead one, until marked
    down. Its first refused connection marks it down, long before its next check."""
    gone, alive = Replica(0.05), Replica(0.05)
    checks = 'ready = {http = "http://127.0.0.1:9000/health", interval = "30s"}\n'
    serve = 'inflight = 2, queue = 50, queue_timeout = "20s"'
    with front(tmp_path, serve, [gone, alive], checks) as (port, _):
        time.sleep(0.3)  # the first checks pass
        gone.server.shutdown()
        gone.server.server_close()
        answers = burst(port, 16)
    assert [a[0] for a in answers] == [200] * 16


def test_a_front_address_that_is_not_an_ipv4_address_is_refused() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(SERVED.replace("port = 18080}", 'port = 18080, address = "eth0"}'))
    assert e.value.lines() == [
        'workloads.chat.serve.address: expected an IPv4 address such as "127.0.0.1" or'
        " \"0.0.0.0\" (got 'eth0')"
    ]
    assert parse_profile(SERVED.replace("port = 18080}", 'port = 18080, address = "0.0.0.0"}'))
