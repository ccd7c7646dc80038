"""Replicas leave their front's rotation before they stop and come back once ready."""

from __future__ import annotations

import signal
from pathlib import Path

from nxrd.daemon.core import Daemon
from nxrd.kernel.fake_host import FakeHost
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES, start_daemon

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


ALL = frozenset({"chat.0", "chat.1", "chat.front"})


def started(
    tmp_path: Path, ready: frozenset[str] = frozenset()
) -> tuple[FakeHost, Daemon, FakeRuntime]:
    """nxrd on a fake host with the profile's workloads started; those in `ready` pass
    their readiness checks in a first pass of the loop."""
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    d = start_daemon(tmp_path, host, PROFILE)
    d.sup.tick(0.0)
    rt = host.proc_runtime
    assert d.runtime is rt and rt is not None
    if ready:
        rt.ready_now |= ready
        d.step(1.0, stopping=False)
    return host, d, rt


def said(host: FakeHost) -> list[str]:
    """Commands sent to fronts since the last call (not the once-a-second reads of counters)."""
    sent = [
        (f, line)
        for f, line in host.front_commands
        if not line.startswith(("show stat", "show table"))
    ]
    out = [f"{front}: {line}" for front, line in sent]
    host.front_commands.clear()
    return out


def test_a_front_that_becomes_ready_learns_where_each_replica_stands(tmp_path: Path) -> None:
    host, d, rt = started(tmp_path)
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
    host, d, rt = started(tmp_path, ALL)
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
    host, d, rt = started(tmp_path)
    rt.ready_now |= ALL
    host.fronts_up = False
    d.sup.tick(1.0)
    d.sup.restart("chat.0", 2.0)
    assert rt.procs["chat.0"].signals == [15]  # the stop went on regardless
    warnings = [e.cause for e in d.events.since(0, "nxrd") if "not put in" in e.cause]
    assert len(warnings) == 1 and "Connection refused" in warnings[0]


def test_a_changed_front_configuration_is_reloaded_without_restarting_the_front(
    tmp_path: Path,
) -> None:
    """A third replica added: the front keeps its process and its connections; HAProxy's
    master gets SIGUSR2 once the new configuration is written, and the new worker is told
    every replica's state once it answers."""
    host, d, rt = started(tmp_path, ALL | {"chat.2"})
    front = d.sup.records["chat.front"]
    pid, old = front.pid, rt.fronts["chat.front"]
    assert pid is not None and "server chat.2" not in old
    said(host)

    d.reconf.reconfigure([("p.toml", PROFILE.replace("replicas = 2", "replicas = 3"))], False, "t")
    d.step(2.0, stopping=False)  # chat.2 starts and gets ready; the front is reloaded
    new = rt.fronts["chat.front"]
    assert (
        "    server chat.2 127.0.0.1:18002 maxconn 1 check inter 1000ms"
        " observe layer4 error-limit 1 on-error mark-down\n"
    ) in new
    assert rt.procs["chat.front"].signals == [signal.SIGUSR2]
    assert d.sup.records["chat.front"].pid == pid and rt.launches.count("chat.front") == 1
    assert said(host) == ["chat.front: show info"]  # its worker, before the reload

    d.step(3.0, stopping=False)  # the old worker still answers: not yet
    assert said(host) == ["chat.front: show info"]
    host.front_workers["chat.front"] = 2
    d.step(4.0, stopping=False)
    assert said(host) == [
        "chat.front: show info",
        "chat.front: set server chat/chat.0 state ready",
        "chat.front: set server chat/chat.1 state ready",
        "chat.front: set server chat/chat.2 state ready",
    ]
    assert [e.cause for e in d.events.since(0, "chat.front")][-1] == "reloaded its configuration"
    d.step(5.0, stopping=False)
    assert said(host) == []  # nothing changed since


def test_a_front_found_running_an_older_configuration_is_reloaded(tmp_path: Path) -> None:
    """As after an nxrd restart that adopted a front while the profile had changed."""
    _, d, rt = started(tmp_path, ALL)
    assert rt.procs["chat.front"].signals == []  # it runs what the plan says
    rt.fronts["chat.front"] = "# an older configuration\n"
    d.rotation.runs.clear()  # what a new nxrd knows
    d.step(2.0, stopping=False)
    assert rt.procs["chat.front"].signals == [signal.SIGUSR2]
    assert rt.fronts["chat.front"] == d.plan.workload("chat.front").front_config


def test_the_controllers_admission_reaches_the_front_once_and_again_after_a_reload(
    tmp_path: Path,
) -> None:
    host, d, rt = started(tmp_path, ALL)
    said(host)
    d.rotation.admit("chat.front", frozenset({"low"}), 1)
    assert said(host) == [
        "chat.front: del map held.map low",
        "chat.front: add map held.map low 1",
        "chat.front: del map held.map normal",
        "chat.front: del map held.map high",
        "chat.front: set maxconn server chat/chat.0 1",
        "chat.front: set maxconn server chat/chat.1 1",
    ]
    d.rotation.admit("chat.front", frozenset({"low"}), 1)
    assert said(host) == []  # told already
    d.rotation.admit("chat.front", frozenset(), 1)
    assert said(host) == ["chat.front: del map held.map low"]

    # a new HAProxy worker knows nothing of it: told again once it answers
    d.rotation.admit("chat.front", frozenset({"low", "normal"}), 1)
    said(host)
    rt.fronts["chat.front"] = "# older\n"
    d.rotation.runs.clear()
    d.step(2.0, stopping=False)
    host.front_workers["chat.front"] = 7
    d.step(3.0, stopping=False)
    assert "chat.front: add map held.map normal 1" in said(host)


def test_the_fronts_queue_and_refusals_are_the_controllers_observations(tmp_path: Path) -> None:
    d = started(tmp_path, ALL)[1]
    d.rotation.figures = {
        "chat.front": {"queued": 3, "admitted": 40, "shed": 5, "late": 1, "shed_by_priority": {}},
        "chat.0": {"inflight": 1, "requests": 20, "rotation": "UP"},
    }
    assert d.rotation.signals() == {
        "chat.front": {"queued": 3.0, "admitted": 40.0, "shed": 5.0, "late": 1.0}
    }


def test_a_front_whose_requests_never_reach_nxrd_is_a_warning_once(tmp_path: Path) -> None:
    """Its queue waits and slo.source.front would stay silent: say why, once."""
    host, d, _ = started(tmp_path, ALL)
    try:

        def serves(admitted: int) -> list[str]:
            host.front_stats["chat.front"] = f"# pxname,svname,stot\nchat,BACKEND,{admitted}\n"
            d.rotation.sample(2.0)
            return [e.cause for e in d.events.since(0) if "logged none" in e.cause]

        assert serves(19) == []  # counted from nxrd's first look (0 requests then)
        warned = serves(20)
        assert len(warned) == 1 and "(user haproxy) reach" in warned[0], warned
        assert serves(600) == warned  # once
    finally:
        d.close()
