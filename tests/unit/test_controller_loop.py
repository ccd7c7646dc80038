"""The controller in the loop: pushed latencies -> rungs -> cgroup values, freezes, events."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from nxrd.controller.loop import Controller
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import FakeCgroupFS
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.ledger import Ledger
from nxrd.model.topology import load_topology
from nxrd.model.units import parse_cpu_list
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES

PROFILE = """
[controller]
cooldown = "1s"
relax_after = "2s"

[workloads.chat]
command = ["chat"]
class = "latency-critical"
cpus = 2
slo = {p99 = "200ms", window = "5s", source = {push = true}}

[workloads.embed]
command = ["embed"]
class = "batch"

[workloads.index]
command = ["index"]
class = "background"
"""


def setup(text: str = PROFILE, admit=lambda front, held, inflight: None):  # type: ignore[no-untyped-def]
    profile = parse_profile(text)
    plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    rt, log = FakeRuntime(), EventLog()
    sup = Supervisor(profile, plan, rt, log, lambda: 0.0)
    sup.tick(0.0)
    ledger = Ledger(lambda: 0.0)
    fs.on_write = ledger.record
    ctl = Controller(profile, plan, fs, sup, log, ledger, lambda: 0.0, admit)
    return ctl, fs, sup, log, ledger


def drive(
    ctl: Controller, latency: float, start: float, seconds: float, step: float = 0.5
) -> float:
    now = start
    while now < start + seconds:
        ctl.push("chat", latency, now)
        ctl.tick(now, lambda names: {n: {"cpu_some": 1.5} for n in names})
        now += step
    return now


def test_a_violation_squeezes_batch_and_recovery_gives_it_back() -> None:
    ctl, fs, _sup, log, ledger = setup()
    static_weight = fs.read("batch/embed", "cpu.weight")
    static_cpus = fs.read("batch/embed", "cpuset.cpus")
    now = drive(ctl, 0.3, 0.0, 2.6)  # 300 ms vs 200 ms: up at 0, 1, 2 s
    assert ctl.state.level == 3
    assert fs.read("batch/embed", "cpu.weight") == static_weight  # weights act per CPU
    assert fs.read("batch/embed", "cpu.max") == "700000 100000"  # 25% of its 28 CPUs
    w = ledger.of("batch/embed")["cpu.max"]
    assert w.by == "controller: cap-25% (chat slack -50% under 10%)"
    ups = [e for e in log.since(0, "controller")]
    assert [(e.old, e.new) for e in ups] == [
        ("static", "cap-75%"),
        ("cap-75%", "cap-50%"),
        ("cap-50%", "cap-25%"),
    ]
    assert ups[0].data["observed"] == {"chat": 0.3} and ups[0].data["slo"] == {"chat": 0.2}
    assert ups[0].data["signals"] == {n: {"cpu_some": 1.5} for n in ("chat", "embed", "index")}
    # latency recovers: the window must first forget the slow requests (5 s)
    now = drive(ctl, 0.05, now, 30.0)
    assert [(e.old, e.new) for e in log.since(0, "controller")][-2:] == [
        ("cap-75%", "static"),
        ("static", "share"),  # comfortable still: batch may use chat's CPUs
    ]
    assert fs.read("batch/embed", "cpu.weight") == static_weight
    assert fs.read("batch/embed", "cpu.max") == "max 100000"
    chat_cpus = fs.read("latency-critical/chat", "cpuset.cpus")
    assert fs.read("background/index", "cpuset.cpus") == static_cpus  # batch only
    assert set(parse_cpu_list(chat_cpus)) < set(
        parse_cpu_list(fs.read("batch/embed", "cpuset.cpus"))
    )
    assert ledger.of("batch/embed")["cpuset.cpus"].by.startswith("controller: share (")
    # the first slow window takes chat's CPUs back at once
    drive(ctl, 0.3, now, 0.5)
    assert log.since(0, "controller")[-1].new == "static"
    assert fs.read("batch/embed", "cpuset.cpus") == static_cpus


def test_a_burst_the_first_rung_answered_does_not_wind_the_ladder_up() -> None:
    ctl, _fs, _sup, log, _ = setup()
    now = drive(ctl, 0.3, 0.0, 0.1)  # one slow request: p99 of the 5 s window 300 ms
    assert ctl.state.level == 1
    now = drive(ctl, 0.05, now, 4.0)  # the window stays at 300 ms for 5 s; these are fast
    assert ctl.state.level == 1
    (up,) = log.since(0, "controller")
    assert up.data["recent"] == {"chat": 0.3}  # every request in the window, at first
    assert ctl.recent(now) == {"chat": 0.05}  # those since cap-75%
    drive(ctl, 0.3, now, 1.0)  # slow again after the rung: the next one
    assert ctl.state.level == 2


def test_no_latency_means_static_values_and_a_frozen_workload_is_thawed_on_release() -> None:
    ctl, fs, sup, log, _ = setup()
    now = drive(ctl, 0.5, 0.0, 12.0)  # climbs to the freezes
    # background is frozen, then stopped (thawed so that it can act on its signal), and
    # only then is batch frozen
    index, embed = sup.records["index"], sup.records["embed"]
    assert ctl.rungs[-3:] == ["freeze-background", "stop-background", "freeze-batch"]
    assert embed.frozen and not index.frozen
    assert (index.state.value, index.stop_cause) == ("stopping", "stopped-by-controller")
    ctl.release(now, "profile changed")
    assert not index.frozen and not embed.frozen
    assert index.start_after_stop  # started again once its stop completes
    assert fs.read("batch/embed", "cpu.max") == "max 100000"
    assert log.since(0, "controller")[-1].cause == "profile changed"


def test_an_operator_freeze_is_left_alone() -> None:
    ctl, _fs, sup, _, _ = setup()
    sup.freeze("embed", 0.0)
    drive(ctl, 0.5, 0.0, 3.0)
    drive(ctl, 0.01, 3.0, 60.0)
    assert ctl.state.level == -1 and sup.records["embed"].frozen


def test_sharing_ends_when_the_target_gets_busy_and_waits_until_it_is_not() -> None:
    ctl, fs, _sup, log, _ = setup()
    static_cpus = fs.read("batch/embed", "cpuset.cpus")

    def using(percent: float, start: float, seconds: float) -> float:
        now = start
        while now < start + seconds:
            ctl.push("chat", 0.05, now)  # comfortable throughout
            ctl.tick(now, lambda names: {"chat": {"cpu_percent": percent}})
            now += 0.5
        return now

    now = using(40.0, 0.0, 3.0)  # 20% of chat's 2 CPUs
    assert ctl.state.level == -1
    now = using(150.0, now, 2.0)  # 75%: the 2 s mean passes 50% on the third tick
    (ended,) = [e for e in log.since(0, "controller") if e.new == "static"]
    assert ended.data["busy"]["chat"] >= 0.5
    assert ended.cause.startswith("chat uses 61% of its cores, 50% or more")
    assert fs.read("batch/embed", "cpuset.cpus") == static_cpus
    now = using(90.0, now, 10.0)  # 45%: under share_below, not under four fifths of it
    assert ctl.state.level == 0
    using(60.0, now, 4.0)  # 30%: shares again
    assert ctl.state.level == -1


class Endpoint:
    """A local HTTP server: /metrics serves a latency histogram whose slow bucket grows by
    `slow` per scrape; /probe answers after `delay` seconds."""

    def __init__(self) -> None:
        self.slow, self.delay, self.scrapes = 0, 0.0, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/probe":
                    time.sleep(owner.delay)
                    body = b"ok"
                else:
                    owner.scrapes += 1
                    n, s = owner.scrapes * 100, owner.scrapes * owner.slow
                    body = (
                        "# TYPE lat histogram\n"
                        f'lat_bucket{{le="0.1"}} {n}\nlat_bucket{{le="0.5"}} {n + s}\n'
                        f'lat_bucket{{le="+Inf"}} {n + s}\nlat_sum 1\nlat_count {n + s}\n'
                    ).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_for(ctl: Controller, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctl.tick(time.monotonic(), lambda names: {})
        time.sleep(0.05)


def test_a_scraped_histogram_drives_the_controller() -> None:
    ep = Endpoint()
    source = f'source = {{prometheus = {{url = "{ep.url}/metrics", metric = "lat", interval = "100ms"}}}}'
    ctl, _, _, log, _ = setup(
        PROFILE.replace("source = {push = true}", source).replace('"1s"', '"200ms"')
    )
    try:
        run_for(ctl, 1.0)  # every request under 100 ms
        assert ctl.state.level == 0 and ctl.latency("chat", time.monotonic()) == 0.099
        ep.slow = 10  # 10 of every 110 requests now take up to 500 ms: p99 in that bucket
        run_for(ctl, 1.5)
        assert ctl.state.level >= 1
        up = next(e for e in log.since(0, "controller") if e.new == "cap-75%")
        assert up.data["observed"]["chat"] > 0.2
        notes = [e.cause for e in log.since(0, "controller") if e.new == "-"]
        assert notes == [  # said once; "answering" only follows a failure
            "chat: the target 0.2s lies inside the bucket (0.1s, 0.5s]: "
            "latency near it is interpolated, not measured",
        ]
    finally:
        ctl.close()
        ep.close()


def test_a_probe_times_requests_and_a_dead_endpoint_is_said_once() -> None:
    ep = Endpoint()
    ep.delay = 0.3  # over the 200 ms SLO
    source = f'source = {{probe = {{url = "{ep.url}/probe", interval = "100ms"}}}}'
    ctl, _, _, log, _ = setup(
        PROFILE.replace("source = {push = true}", source).replace('"1s"', '"200ms"')
    )
    try:
        run_for(ctl, 1.5)
        assert ctl.state.level >= 1
        assert 0.3 <= ctl.latency("chat", time.monotonic()) < 1.0
    finally:
        ctl.close()
        ep.close()
    dead = 'source = {probe = {url = "http://127.0.0.1:1/", interval = "100ms"}}'
    ctl, _, _, log, _ = setup(PROFILE.replace("source = {push = true}", dead))
    try:
        run_for(ctl, 0.6)
        said = [e.cause for e in log.since(0, "controller")]
        assert said == [
            "chat: slo.source probe failing: http://127.0.0.1:1/: [Errno 111] Connection refused"
        ]
        assert ctl.state.level == 0  # no latency: static values
    finally:
        ctl.close()


def test_held_values_are_not_reread_each_tick_but_a_new_process_gets_them_again() -> None:
    ctl, fs, sup, _log, _ledger = setup()
    now = drive(ctl, 0.3, 0.0, 2.6)
    now = drive(ctl, 0.17, now, 2.0)  # 15% slack: neither climbing nor relaxing
    level, cap = ctl.state.level, fs.read("batch/embed", "cpu.max")
    assert level >= 3 and cap != "max 100000"
    reads: list[tuple[str, str]] = []
    read = fs.read
    fs.read = lambda rel, name: reads.append((rel, name)) or read(rel, name)  # type: ignore[method-assign]
    now = drive(ctl, 0.17, now, 10.0)
    assert ctl.state.level == level and reads == []  # held: nothing re-read, nothing written
    # embed restarts: its new process starts from the plan's values, as a launch writes them
    fs.write("batch/embed", "cpu.max", "max 100000")
    sup.records["embed"].pid = 4242
    drive(ctl, 0.17, now, 0.5)
    assert ctl.state.level == level and fs.read("batch/embed", "cpu.max") == cap
    assert ("batch/embed", "cpu.max") in reads


def test_probe_after_comes_from_the_profile_and_zero_turns_it_off() -> None:
    from nxrd.controller.spec import control_spec

    for line, want in (("", 15.0), ('probe_after = "8s"', 8.0), ('probe_after = "0s"', None)):
        profile = parse_profile(PROFILE.replace("[controller]", f"[controller]\n{line}"))
        plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
        assert control_spec(profile, plan).probe_after == want


def test_judging_costs_each_pushed_request_in_cpu_and_steps_back_from_a_useless_cap() -> None:
    judging = PROFILE.replace('cooldown = "1s"', 'cooldown = "2s"\njudge = true')
    ctl, fs, _sup, log, _ = setup(judging)
    for i in range(15):  # 10 requests a second, each 300 ms: over the SLO throughout
        ctl.push("chat", 0.3, i / 10)
    now = 1.5
    while now < 4.0:
        for i in range(5):
            ctl.push("chat", 0.3, now - i / 10)
        # 80% of one of chat's two CPUs: 0.8 CPU s a second for 10 requests, 80 ms each
        ctl.tick(now, lambda names: {"chat": {"cpu_percent": 80.0}})
        now += 0.5
    assert ctl.service(3.5, ctl.busy(3.5, {})) == {"chat": (pytest.approx(0.08), 20)}
    up, back = log.since(0, "controller")
    assert (up.new, up.data["cost"]) == ("cap-75%", {"chat": 0.08})
    assert (back.new, back.data["direction"]) == ("static", "down")
    assert ctl.state.changed_at == 3.5  # 2 s after the climb at 1.5 s
    assert back.cause.startswith("cap-75% did not make requests 10% cheaper (chat 80.0 ms of CPU")
    assert fs.read("batch/embed", "cpu.max") == "max 100000"
    # without judge, no climb is judged on it: no cost among a decision's inputs
    plain, _, _, plain_log, _ = setup()
    for i in range(15):
        plain.push("chat", 0.3, i / 10)
    plain.tick(1.5, lambda names: {"chat": {"cpu_percent": 80.0}})
    (up,) = plain_log.since(0, "controller")
    assert up.new == "cap-75%" and "cost" not in up.data


def test_the_last_rung_stops_batch_with_a_declared_cause_and_starts_it_again() -> None:
    from nxrd.supervisor.restart import CAUSES

    text = PROFILE.replace('command = ["embed"]', 'command = ["embed"]\ncontrol = {stop = true}')
    ctl, _fs, sup, log, _ledger = setup(text)
    now = drive(ctl, 0.5, 0.0, 30.0)  # far over the SLO: every rung, one a second
    assert ctl.state.level == len(ctl.rungs) and ctl.rungs[-1] == "stop-batch"
    rec = sup.records["embed"]
    assert rec.stop_cause == "stopped-by-controller" and rec.stop_cause in CAUSES
    sup.tick(now)
    assert rec.state.value == "stopped"
    assert log.since(0, "embed")[-1].cause == "stopped by controller (signal SIGTERM)"
    drive(ctl, 0.01, now, 60.0)  # comfortable again: the ladder comes down, batch restarts
    sup.tick(now + 60.0)
    assert rec.state.value in ("starting", "ready")


SERVED = """
[controller]
cooldown = "1s"
relax_after = "2s"

[workloads.chat]
command = ["chat"]
class = "latency-critical"
cpus = 2
replicas = 2
port = 18000
slo = {p99 = "200ms", window = "5s", source = {push = true}}
serve = {port = 18080, inflight = 4}

[workloads.embed]
command = ["embed"]
class = "batch"
control = {freeze = false}
"""


def test_past_the_lower_classes_rungs_the_front_holds_back_low_priority_then_its_cap() -> None:
    """Admission as the top rungs: once capping batch is not enough, the fronts of the
    targets refuse low, then normal priority, then halve the in-flight cap; all of it
    given back on the way down."""
    admitted: list[tuple[str, list[str], int]] = []
    ctl, _fs, _sup, log, _ = setup(
        SERVED, lambda front, held, inflight: admitted.append((front, sorted(held), inflight))
    )
    assert ctl.rungs == [
        *("cap-75%", "cap-50%", "cap-25%", "core-1", "core-2"),
        *("hold-low", "hold-normal", "inflight-50%"),
    ]
    # the front is neither a target nor squeezed as a lower class
    assert [t.name for t in ctl.spec.targets] == ["chat.0", "chat.1"]
    assert [w.name for w in ctl.spec.lowers] == ["embed"]

    now = 0.0
    while ctl.state.level < len(ctl.rungs):
        for t in ("chat.0", "chat.1"):
            ctl.push(t, 0.4, now)
        ctl.tick(now, lambda names: {})
        now += 0.5
    said = {(front, tuple(held), n) for front, held, n in admitted}
    assert ("chat.front", (), 4) in said  # the cap and core rungs: admission as planned
    assert ("chat.front", ("low",), 4) in said
    assert ("chat.front", ("low", "normal"), 4) in said
    assert admitted[-1] == ("chat.front", ["low", "normal"], 2)
    event = log.since(0, "controller")[-1]
    assert (event.old, event.new) == ("hold-normal", "inflight-50%")
    assert event.data["observed"] == {"chat.0": 0.4, "chat.1": 0.4}

    ctl.release(now, "profile changed")
    assert admitted[-1] == ("chat.front", [], 4)


def test_requests_waiting_at_the_servers_port_climb_while_those_answered_are_fast() -> None:
    """chat answers each request in 20 ms (10% of its SLO) using 40% of one of its two CPUs
    at 10 requests a second: 40 ms of CPU each. Then 20 connections wait in its accept
    queue: the next is answered after 21 x 40 ms / 2 cores = 420 ms, over the SLO. Sharing
    (reached while it was calm) ends, and batch is capped, before any slow answer is seen."""
    ctl, fs, _sup, log, _ = setup()
    now = 0.0
    for waiting in (0.0, 0.0, 0.0, 0.0, 0.0, 20.0, 20.0):
        for i in range(10):
            ctl.push("chat", 0.02, now + i / 10)
        now += 1.0
        ctl.tick(now, lambda names, q=waiting: {"chat": {"cpu_percent": 40.0, "listen_queue": q}})
    ups = [e for e in log.since(0, "controller") if e.data.get("direction") == "up"]
    assert [e.new for e in ups] == ["static", "cap-75%"]
    # about -110%: the CPU per request is the mean over the last 2 s
    assert ups[0].cause.startswith("chat slack -1")
    assert ups[0].cause.endswith("% under 10% (20 requests waiting to be accepted)")
    assert ups[0].data["queued"] == {"chat": 20.0} and ups[0].data["observed"]["chat"] == 0.02
    assert fs.read("batch/embed", "cpu.max") != "max 100000"
