"""Pushed latencies over a real datagram socket: only a workload's own processes count, and
nxrd takes them in without a loop pass per report."""

from __future__ import annotations

import math
import os
import select
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nxrd.controller.push import Drained, PushReceiver
from nxrd.daemon import waiting
from nxrd.daemon.core import Daemon
from nxrd.front.requests import LoggedRequest
from nxrd.kernel.fake_host import FakeHost
from nxrd.latency import LatencyReporter
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES

PUSHING = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
slo = { p99 = "200ms", source = { push = true } }
"""


def test_reports_count_only_from_the_workloads_own_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "latency.sock")
    me = os.getpid()
    rx = PushReceiver(path, owner_of=lambda pid: "chat" if pid == me else None)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o666"
        ok = LatencyReporter("chat", path, every=0)  # each report its own datagram
        liar = LatencyReporter("rank", path, every=0)  # this process is not in rank's cgroup
        ok(0.125)
        ok(0.25)
        liar(9.0)
        ok.sock.sendto(b"chat not-a-number\n", path)
        assert rx.drain().latencies == [("chat", 0.125), ("chat", 0.25)]
        assert rx.rejected == 1
        assert rx.drain() == Drained()
        ok.close()
        liar.close()
    finally:
        rx.close()
    assert not Path(path).exists()
    LatencyReporter("chat", path)(0.1)  # nxrd gone: silently nothing


def test_reports_go_out_together_at_most_every_50_ms(tmp_path: Path) -> None:
    """A busy server's reports must not cost nxrd a wake per request; none is lost."""
    path = str(tmp_path / "latency.sock")
    rx = PushReceiver(path, owner_of=lambda pid: "chat")
    now = [100.0]
    report = LatencyReporter("chat", path, clock=lambda: now[0])
    datagrams: list[list[float]] = []

    def take() -> None:
        got = rx.drain().latencies
        if got:
            datagrams.append([s for _, s in got])

    try:
        report(0.1)  # the first after a quiet spell goes at once
        take()
        for t, v in ((100.01, 0.2), (100.02, 0.3)):
            now[0] = t
            report(v)
        take()  # those two wait
        now[0] = 100.06
        report(0.4)  # 60 ms after the last datagram: all three go
        take()
        now[0] = 100.07
        report(0.5)
        take()
        report.close()  # what waits goes with close
        take()
        assert datagrams == [[0.1], [0.2, 0.3, 0.4], [0.5]]
    finally:
        rx.close()


def test_nxrd_keeps_waiting_through_reports_and_wakes_for_anything_else(tmp_path: Path) -> None:
    """Reports arrive with every request a workload serves; each must reach the controller
    without running a whole loop pass (a supervisor tick, a state save) per datagram."""
    me = os.getpid()
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    host.monotonic = time.monotonic  # type: ignore[method-assign]  # real waits here
    (tmp_path / "p.toml").write_text(PUSHING)
    socket = str(tmp_path / "nxrd.sock")
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "state"), socket_path=socket, host=host)
    d.start()
    assert d.push is not None
    path = d.push.path  # beside the API's socket
    # a host without systemd queued 10 datagrams; nxrd raised it before binding, and said so
    assert host.dgram_qlen == 512
    said = [e.cause for e in d.events.since(0, "nxrd")]
    assert any(c.startswith("raised net.unix.max_dgram_qlen from 10 to 512") for c in said)
    host.spawned(me, d.plan.workload("chat").cgroup)  # this process reports as chat
    got: list[float] = []
    d.controller.push = lambda name, s, now: got.append(s)  # type: ignore[method-assign]
    wake_r, wake_w = os.pipe()
    poller = select.poll()
    for fd in (d.push.fileno(), wake_r):
        poller.register(fd, select.POLLIN)
    report = LatencyReporter("chat", path, every=0)

    def send(values: list[float], then_wake: bool) -> None:
        for v in values:
            time.sleep(0.03)
            report(v)
        if then_wake:
            os.write(wake_w, b"x")

    try:
        until = time.monotonic() + 0.4
        sender = threading.Thread(target=send, args=([0.1, 0.2, 0.3], False))
        sender.start()
        waiting.wait(d, poller, wake_r, time.monotonic(), until)
        sender.join()
        assert got == [0.1, 0.2, 0.3]
        assert time.monotonic() >= until  # three reports, one wait

        got.clear()
        start = time.monotonic()
        sender = threading.Thread(target=send, args=([0.5], True))
        sender.start()
        waiting.wait(d, poller, wake_r, start, start + 30.0)
        sender.join()
        assert got == [0.5]
        assert time.monotonic() - start < 20.0  # the wake ended the wait, not the deadline
    finally:
        report.close()
        d.close()
        os.close(wake_r)
        os.close(wake_w)


def test_a_flood_is_drained_in_bounded_steps_and_foreign_senders_are_not_parsed(
    tmp_path: Path,
) -> None:
    """Anyone may send (the socket is 0666). A flood that never lets up (here a socket that
    always has one more datagram, from outside every workload) still ends each drain after
    a bounded number, each dropped before parsing. Before, a drain ran until the socket was
    empty, which a flood from four processes delayed by 12 s."""
    import struct

    class Flood:
        calls = 0

        def recvmsg(self, size: int, anc: int) -> tuple[bytes, list[Any], int, None]:
            self.calls += 1
            if self.calls > 100_000:  # the old drain ends only here
                raise BlockingIOError
            creds = struct.pack("3i", 4242, 1000, 1000)
            return b"chat 0.1\n" * 50, [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0, None

    asked: list[int] = []
    rx = PushReceiver(str(tmp_path / "latency.sock"), owner_of=lambda p: asked.append(p) or None)
    real, rx.sock = rx.sock, Flood()  # type: ignore[assignment]
    try:
        assert rx.drain() == Drained()
        assert 0 < rx.rejected <= 1000  # push.DRAIN_DATAGRAMS
        assert asked == [4242]  # one lookup for the sender in a drain, its datagrams unread
    finally:
        rx.sock = real
        rx.close()


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | st.sampled_from([b"chat nan", b"chat inf", b"chat -1", b"chat 1e999"])
)
def test_garbage_from_the_workload_itself_never_counts_as_a_latency(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "latency.sock")
        rx = PushReceiver(path, owner_of=lambda pid: "chat")
        tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            tx.sendto(data, path)
            for name, seconds in rx.drain().latencies:
                assert name == "chat" and math.isfinite(seconds) and seconds >= 0
        finally:
            tx.close()
            rx.close()


def test_a_fronts_request_lines_count_only_from_its_cgroup_and_for_its_own_replicas(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "latency.sock")
    owner = ["chat.front"]
    rx = PushReceiver(path, owner_of=lambda pid: owner[0])
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        tx.sendto(b"nxr-request chat.1 high 12 250 200\n", path)
        tx.sendto(b"nxr-request <NOSRV> low -1 0 429", path)  # HAProxy's, unterminated
        tx.sendto(b"nxr-request rank.0 high 0 9000 200\n", path)  # not its replica
        tx.sendto(b"nxr-request chat.0 urgent 0 1 200\nchat.0 0.5\n", path)  # no such lines
        drained = rx.drain()
        owner[0] = "chat.0"  # a replica may push its own latency, never log as its front
        tx.sendto(b"nxr-request chat.0 high 0 1 200\n", path)
        from_replica = rx.drain()
    finally:
        tx.close()
        rx.close()
    assert drained.latencies == []
    assert drained.requests == [
        ("chat.front", LoggedRequest("chat.1", "high", 0.012, 0.25, 200)),
        ("chat.front", LoggedRequest(None, "low", None, 0.0, 429)),
    ]
    assert from_replica == Drained()  # read as a latency report, and not a number
    assert rx.rejected == 3


SERVED = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
replicas = 2
port = 9000
serve = { port = 8080 }
slo = { p99 = "200ms", source = { front = true } }
"""


def test_slo_source_front_keeps_each_replica_to_the_latency_its_front_logged(
    tmp_path: Path,
) -> None:
    host = FakeHost(load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    host.monotonic = time.monotonic  # type: ignore[method-assign]  # real waits here
    (tmp_path / "p.toml").write_text(SERVED)
    socket_path = str(tmp_path / "nxrd.sock")
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "state"), socket_path, host=host)
    d.start()
    assert d.push is not None  # a front logs there, though no workload pushes
    host.spawned(os.getpid(), d.plan.workload("chat.front").cgroup)  # as HAProxy's worker
    wake_r, wake_w = os.pipe()
    poller = select.poll()
    poller.register(d.push.fileno(), select.POLLIN)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        tx.sendto(b"nxr-request chat.1 high 40 300 200\n", d.push.path)
        tx.sendto(b"nxr-request <NOSRV> low 2000 2000 503\n", d.push.path)
        start = time.monotonic()
        waiting.wait(d, poller, wake_r, start, start + 0.3)
        now = time.monotonic()
        windows = d.controller.windows
        assert windows["chat.1"].percentile(0.99, now) == 0.3  # queue and service
        assert windows["chat.0"].percentile(0.99, now) is None
        waits = d.rotation.waits["chat.front"].figures(now)
        assert waits["queue_wait_p99"] == 2.0  # the one dropped at the queue timeout
        assert set(waits["queue_wait"]) == {"le", "chat.1/high", "/low"}  # type: ignore[arg-type]
    finally:
        tx.close()
        d.close()
        os.close(wake_r)
        os.close(wake_w)


def test_the_datagram_queue_is_raised_to_systemds_512_before_the_socket_is_made(
    tmp_path: Path,
) -> None:
    """Without systemd the kernel queues 10 datagrams: a front's burst of log lines while
    nxrd's loop is busy would lose the rest. nxrd raises the limit, as systemd does at boot,
    never lowers it, and says so only when it changed it."""
    from nxrd.controller.push import QUEUE
    from nxrd.kernel.dgram_queue import raise_to

    qlen = tmp_path / "max_dgram_qlen"
    qlen.write_text("10\n")
    assert raise_to(QUEUE, qlen) == 10 and qlen.read_text() == "512\n"
    assert raise_to(QUEUE, qlen) is None  # already enough: untouched
    qlen.write_text("4096\n")
    assert raise_to(QUEUE, qlen) is None and qlen.read_text() == "4096\n"
    assert raise_to(QUEUE, tmp_path / "missing") is None  # no such setting: nothing to do

    order: list[str] = []

    def deepen(n: int) -> int | None:
        order.append(f"deepen {n}, socket made: {Path(path).exists()}")
        return 10

    path = str(tmp_path / "latency.sock")
    rx = PushReceiver(path, owner_of=lambda pid: None, deepen=deepen)
    rx.close()
    assert order == ["deepen 512, socket made: False"]
    assert rx.note is not None and "from 10 to 512" in rx.note
    rx = PushReceiver(path, owner_of=lambda pid: None, deepen=lambda n: None)
    rx.close()
    assert rx.note is None
