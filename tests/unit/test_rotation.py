"""Replicas leave their front's rotation before they stop and come back once ready."""

from __future__ import annotations

from pathlib import Path

from nxrd.daemon.core import Daemon
from nxrd.kernel.fake_host import FakeHost
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES

PROFILE = """
[workloads.chat]
command = ["serve"]
replicas = 2
port = 18000
ready = {tcp = "127.0.0.1:18000"}
restart = {delay = "1s"}
serve = {port = 18080}

[workloads.other]
command = ["other"]
"""


def started(tmp_path: Path) -> tuple[FakeHost, Daemon]:
    host = FakeHost(load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    (tmp_path / "p.toml").write_text(PROFILE)
    d = Daemon(
        [str(tmp_path / "p.toml")],
        str(tmp_path / "state"),
        socket_path=str(tmp_path / "nxrd.sock"),
        host=host,
    )
    d.start()
    d.sup.tick(0.0)
    assert d.runtime is host.proc_runtime and host.proc_runtime is not None
    return host, d


def said(host: FakeHost) -> list[str]:
    out = [f"{front}: {line}" for front, line in host.front_commands]
    host.front_commands.clear()
    return out


def test_a_front_that_becomes_ready_learns_where_each_replica_stands(tmp_path: Path) -> None:
    host, d = started(tmp_path)
    rt = host.proc_runtime
    assert rt is not None
    rt.ready_now |= {"chat.0"}
    d.sup.tick(1.0)
    assert said(host) == []  # the front is not ready: nobody to tell
    rt.ready_now |= {"chat.front"}
    d.sup.tick(2.0)
    assert said(host) == [
        "chat.front: set server chat/chat.0 state ready",
        "chat.front: set server chat/chat.1 state maint",  # still starting
    ]
    rt.ready_now |= {"chat.1"}
    d.sup.tick(3.0)
    assert said(host) == ["chat.front: set server chat/chat.1 state ready"]


def test_a_replica_leaves_rotation_before_its_stop_signal_and_returns_when_ready(
    tmp_path: Path,
) -> None:
    host, d = started(tmp_path)
    rt = host.proc_runtime
    assert rt is not None
    rt.ready_now |= {"chat.0", "chat.1", "chat.front"}
    d.sup.tick(1.0)
    said(host)
    host.front_commands.append(("-", "marker"))
    d.sup.restart("chat.1", 2.0)
    # the maint command went out before the replica got its SIGTERM
    assert host.front_commands[1] == ("chat.front", "set server chat/chat.1 state maint")
    assert rt.procs["chat.1"].signals == [15]
    rt.exit("chat.1", sig=15)
    for t in (3.0, 4.0, 5.0):
        d.sup.tick(t)
    assert d.sup.records["chat.1"].state.value == "ready"
    assert said(host)[-1] == "chat.front: set server chat/chat.1 state ready"

    # a crash takes it out (once, through exited, backoff and starting) until it is ready
    # again; other workloads never reach the front
    rt.exit("chat.0", code=1)
    rt.exit("other", code=1)
    for t in (6.0, 7.0, 8.0):
        d.sup.tick(t)
    assert said(host) == [
        "chat.front: set server chat/chat.0 state maint",
        "chat.front: set server chat/chat.0 state ready",
    ]


def test_a_front_that_does_not_answer_is_said_once_and_stalls_nothing(tmp_path: Path) -> None:
    host, d = started(tmp_path)
    rt = host.proc_runtime
    assert rt is not None
    rt.ready_now |= {"chat.0", "chat.1", "chat.front"}
    host.fronts_up = False
    d.sup.tick(1.0)
    d.sup.restart("chat.0", 2.0)
    assert rt.procs["chat.0"].signals == [15]  # the stop went on regardless
    warnings = [e.cause for e in d.events.since(0, "nxrd") if "not put in" in e.cause]
    assert len(warnings) == 1 and "Connection refused" in warnings[0]
