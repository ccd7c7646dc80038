"""The supervisor with a fake runtime and a hand-driven clock."""

from __future__ import annotations

import itertools
import signal

import pytest

from nxrd.errors import NxrError
from nxrd.kernel.fake_runtime import FakeProcess, FakeRuntime
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(text: str) -> tuple[Supervisor, FakeRuntime, Clock, EventLog]:
    profile = parse_profile(text)
    plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    rt, clock, log = FakeRuntime(), Clock(), EventLog()
    return Supervisor(profile, plan, rt, log, clock, jitter=lambda: 0.5), rt, clock, log


def run(sup: Supervisor, clock: Clock, seconds: float, step: float = 0.1) -> None:
    end = clock.now + seconds
    while clock.now < end:
        sup.tick(clock.now)
        clock.now = round(clock.now + step, 6)


def states(sup: Supervisor) -> dict[str, str]:
    return {n: r.state.value for n, r in sup.records.items()}


def trail(log: EventLog, name: str) -> list[str]:
    return [e.new for e in log.since(0, name)]


def test_starts_in_dependency_order() -> None:
    sup, rt, clock, log = make(
        '[workloads.api]\ncommand=["x"]\nafter=["db"]\n[workloads.db]\ncommand=["x"]\n'
    )
    sup.tick(clock.now)
    assert rt.launches == ["db", "api"]  # db ready at once (no check), then api
    assert states(sup) == {"api": "ready", "db": "ready"}
    assert trail(log, "api") == ["starting", "ready"]


def test_after_waits_for_readiness() -> None:
    sup, rt, clock, _log = make(
        '[workloads.api]\ncommand=["x"]\nafter=["db"]\n'
        '[workloads.db]\ncommand=["x"]\nready={tcp=5432, interval="1s", timeout="30s"}\n'
    )
    run(sup, clock, 3)
    assert states(sup) == {"api": "pending", "db": "starting"}
    assert sup.records["api"].reason == "waiting for db to be ready"
    rt.ready_now.add("db")
    run(sup, clock, 1.5)
    assert states(sup) == {"api": "ready", "db": "ready"}


def test_oom_kill_is_the_recorded_cause_and_it_restarts() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\nmemory_max="64M"\n')
    sup.tick(clock.now)
    rt.oom["w"] = 1
    rt.exit("w", sig=signal.SIGKILL)
    run(sup, clock, 1.5)
    exited = next(e for e in log.since(0, "w") if e.new == "exited")
    assert exited.cause == "oom"
    assert trail(log, "w") == [
        "starting",
        "ready",
        "exited",
        "backoff",
        "pending",
        "starting",
        "ready",
    ]
    assert rt.launches == ["w", "w"]


def test_crash_loop_backs_off_growing_then_fails() -> None:
    sup, rt, clock, log = make(
        '[workloads.w]\ncommand=["x"]\nrestart={delay="1s", max_delay="8s", max_restarts=3}\n'
    )
    launched_at = []
    for _ in range(200):
        sup.tick(clock.now)
        rec = sup.records["w"]
        if rec.state == State.READY:
            launched_at.append(clock.now)
            rt.exit("w", code=1)
        if rec.state == State.FAILED:
            break
        clock.now = round(clock.now + 0.1, 6)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(launched_at)]
    # doubling delays (jitter fixed at the midpoint), plus the 0.1 s tick that sees the exit
    assert gaps == [1.1, 2.1, 4.1]
    assert sup.records["w"].state == State.FAILED
    assert log.since(0, "w")[-1].cause == "exit code 1; 3 restarts within 5m, max_restarts is 3"
    run(sup, clock, 30)
    assert len(rt.launches) == 4  # failed stays failed...
    sup.start("w", clock.now)
    sup.tick(clock.now)
    assert len(rt.launches) == 5 and sup.records["w"].state == State.READY  # ...until started


def test_stop_escalates_to_killing_the_cgroup_after_the_timeout() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\nstop={timeout="5s"}\n')
    sup.tick(clock.now)
    rt.procs["w"].ignores_signals = True
    rt.leftovers.add("w")  # a child it forked
    sup.stop("w", clock.now)
    run(sup, clock, 4.9)
    assert rt.procs["w"].signals == [signal.SIGTERM] and rt.killed == []
    run(sup, clock, 0.3)
    assert rt.killed and not rt.populated(sup.records["w"].plan)
    assert sup.records["w"].state == State.STOPPED and "w" not in rt.cgroups
    assert log.since(0, "w")[-1].cause == "stopped by operator (signal SIGKILL)"


def test_a_failed_spawn_is_an_exit_with_its_reason() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["nope"]\nrestart={policy="no"}\n')
    rt.fail_launch.add("w")
    sup.tick(clock.now)
    assert trail(log, "w") == ["starting", "exited", "stopped"]
    assert log.since(0, "w")[1].cause == ("spawn failed: cannot start w: program 'nope' not found")


def test_not_ready_in_time_is_a_failed_start() -> None:
    sup, _rt, clock, log = make(
        '[workloads.w]\ncommand=["x"]\nready={tcp=1, timeout="3s"}\nrestart={policy="on-failure"}\n'
    )
    run(sup, clock, 3.3)
    assert trail(log, "w")[:4] == ["starting", "stopping", "exited", "backoff"]
    assert log.since(0, "w")[2].cause == "not ready: not ready in time"


def test_pool_of_one_runs_workloads_one_at_a_time_by_priority() -> None:
    sup, rt, clock, _log = make(
        "[pools.gpu]\nslots=1\n"
        '[workloads.low]\ncommand=["x"]\npool="gpu"\npriority=10\nrestart={policy="no"}\n'
        '[workloads.high]\ncommand=["x"]\npool="gpu"\npriority=900\nrestart={policy="no"}\n'
        '[workloads.mid]\ncommand=["x"]\npool="gpu"\npriority=500\nrestart={policy="no"}\n'
    )
    order = []
    for _ in range(10):
        sup.tick(clock.now)
        running = [n for n, r in sup.records.items() if r.state == State.READY]
        assert len(running) <= 1
        if running:
            order.append(running[0])
            rt.exit(running[0], code=0)
        clock.now += 0.1
    assert order == ["high", "mid", "low"]
    assert sup.records["low"].state == State.STOPPED


def test_waiting_workloads_say_why() -> None:
    sup, _rt, clock, _log = make(
        "[pools.gpu]\nslots=1\n"
        '[workloads.a]\ncommand=["x"]\npool="gpu"\npriority=900\n'
        '[workloads.b]\ncommand=["x"]\npool="gpu"\n'
    )
    sup.tick(clock.now)
    sup.tick(clock.now)  # holders are those started before this tick
    assert sup.records["b"].state == State.WAITING_FOR_POOL
    assert (
        sup.records["b"].reason == "waiting for pool gpu: needs 1 slot(s), 0 of 1 free (held by a)"
    )


@pytest.mark.parametrize("policy", ["no", "on-failure"])
def test_clean_exit_stays_stopped_unless_always(policy: str) -> None:
    sup, rt, clock, _log = make(f'[workloads.w]\ncommand=["x"]\nrestart={{policy="{policy}"}}\n')
    sup.tick(clock.now)
    rt.exit("w", code=0)
    run(sup, clock, 5)
    assert sup.records["w"].state == State.STOPPED and rt.launches == ["w"]


def test_leftover_children_are_killed_before_a_restart() -> None:
    sup, rt, clock, _log = make('[workloads.w]\ncommand=["x"]\nrestart={policy="always"}\n')
    sup.tick(clock.now)
    rt.leftovers.add("w")
    rt.exit("w", code=0)
    run(sup, clock, 2)
    assert rt.killed[0] == "w" and rt.launches == ["w", "w"]


def test_restart_stops_then_starts_again() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\n')
    sup.tick(clock.now)
    sup.restart("w", clock.now)
    run(sup, clock, 1)
    assert trail(log, "w") == [
        "starting",
        "ready",
        "stopping",
        "stopped",
        "pending",
        "starting",
        "ready",
    ]
    assert rt.launches == ["w", "w"]


def test_adopted_workloads_keep_their_process_and_are_still_supervised() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\nrestart={policy="always"}\n')
    rt.procs["w"] = FakeProcess("w", 4242)
    sup.adopt("w", 4242, 4243, clock.now - 50, clock.now, "ready")
    run(sup, clock, 1)
    assert rt.launches == [] and sup.records["w"].pid == 4242
    assert trail(log, "w") == ["starting", "ready"]
    rt.exit("w", sig=signal.SIGSEGV)
    run(sup, clock, 2)
    assert rt.launches == ["w"]
    assert [e.cause for e in log.since(0, "w") if e.new == "exited"] == ["signal SIGSEGV"]


def test_launch_key_changes_with_what_needs_a_restart() -> None:
    a, *_ = make('[workloads.w]\ncommand=["x"]\nmemory_max="1G"\n')
    b, *_ = make('[workloads.w]\ncommand=["x"]\nmemory_max="2G"\n')  # live cgroup change only
    c, *_ = make('[workloads.w]\ncommand=["x", "--v2"]\n')
    d, *_ = make('[workloads.w]\ncommand=["x"]\nenv={A="1"}\n')
    assert a.launch_key("w") == b.launch_key("w")
    assert len({a.launch_key("w"), c.launch_key("w"), d.launch_key("w")}) == 3
    assert a.snapshot()["w"]["launch"] == a.launch_key("w")


def test_a_stop_cancels_a_pending_restart() -> None:
    sup, rt, clock, _ = make('[workloads.w]\ncommand=["x"]\n')
    sup.tick(clock.now)
    rt.procs["w"].ignores_signals = True
    sup.restart("w", clock.now, cause="profile-changed")
    sup.stop_all(clock.now)  # SIGTERM to nxrd while the restart is under way
    run(sup, clock, 15)
    assert sup.all_stopped() and rt.launches == ["w"]


def test_a_start_during_a_stop_starts_it_again() -> None:
    sup, rt, clock, _log = make('[workloads.w]\ncommand=["x"]\n')
    sup.tick(clock.now)
    sup.stop("w", clock.now)
    sup.start("w", clock.now)
    run(sup, clock, 1)
    assert sup.records["w"].state == State.READY and rt.launches == ["w", "w"]


def test_waiting_for_a_pool_goes_back_to_pending_when_a_dependency_stops() -> None:
    sup, rt, clock, _ = make(
        "[pools.p]\nslots=1\n"
        '[workloads.a]\ncommand=["x"]\n'
        '[workloads.c]\ncommand=["x"]\npool="p"\npriority=900\n'
        '[workloads.b]\ncommand=["x"]\npool="p"\nafter=["a"]\n'
    )
    run(sup, clock, 0.5)
    assert states(sup) == {"a": "ready", "c": "ready", "b": "waiting-for-pool"}
    sup.stop("a", clock.now)
    run(sup, clock, 0.5)
    sup.stop("c", clock.now)
    run(sup, clock, 0.5)
    assert states(sup)["b"] == "pending" and "b" not in rt.launches


def test_an_adopted_start_is_still_checked_for_readiness() -> None:
    sup, rt, clock, _ = make(
        '[workloads.db]\ncommand=["x"]\nready={tcp=1, timeout="1m"}\n'
        '[workloads.api]\ncommand=["x"]\nafter=["db"]\n'
    )
    rt.procs["db"] = FakeProcess("db", 4242)
    sup.adopt("db", 4242, 4243, clock.now, clock.now, "starting")
    run(sup, clock, 2)
    assert states(sup) == {"db": "starting", "api": "pending"}


def test_repeated_spawn_failures_back_off_even_after_a_healthy_run() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\nrestart={max_restarts=50}\n')
    sup.tick(clock.now)
    clock.now += 600  # a long healthy run
    rt.fail_launch.add("w")
    rt.exit("w", code=1)
    run(sup, clock, 40)
    delays = [
        float(e.cause.rsplit(" in ", 1)[1][:-1]) for e in log.since(0, "w") if e.new == "backoff"
    ]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]


def test_failed_and_operator_stopped_survive_a_restart_of_nxrd() -> None:
    sup, rt, clock, _log = make(
        '[workloads.f]\ncommand=["x"]\n[workloads.s]\ncommand=["x"]\n[workloads.n]\ncommand=["x"]\n'
    )
    assert sup.restore("f", "failed", "exit code 1; 5 restarts within 5m", None)
    assert sup.restore("s", "stopped", "stopped by operator", "stopped-by-operator")
    assert not sup.restore("n", "stopped", "nxrd exiting", "nxrd-exiting")  # starts again
    run(sup, clock, 2)
    assert rt.launches == ["n"]
    assert states(sup) == {"f": "failed", "s": "stopped", "n": "ready"}
    sup.start("f", clock.now)
    sup.tick(clock.now)
    assert sup.records["f"].state == State.READY  # an operator's start ends it


def test_stops_and_failures_outlast_nxrd_exiting() -> None:
    """nxrd stops everything on its way out; what an operator stopped, what a policy held
    stopped and what failed must still read so in the state the next nxrd adopts."""
    sup, rt, clock, _ = make(
        '[workloads.s]\ncommand=["x"]\n[workloads.h]\ncommand=["x"]\n'
        '[workloads.f]\ncommand=["x"]\nrestart={max_restarts=0}\n[workloads.r]\ncommand=["x"]\n'
    )
    run(sup, clock, 1)
    sup.stop("s", clock.now)
    sup.stop("h", clock.now, cause="stopped: over its GPU memory", hold=True)
    rt.exit("f", code=1)
    run(sup, clock, 2)
    sup.stop_all(clock.now)
    run(sup, clock, 2)
    snap = sup.snapshot()
    assert {n: (e["state"], e["stop_cause"], e["held"]) for n, e in snap.items()} == {
        "s": ("stopped", "stopped-by-operator", False),
        "h": ("stopped", "stopped: over its GPU memory", True),
        "f": ("failed", None, False),
        "r": ("stopped", "nxrd-exiting", False),
    }
    nxt, rt2, clock2, _ = make(
        '[workloads.s]\ncommand=["x"]\n[workloads.h]\ncommand=["x"]\n'
        '[workloads.f]\ncommand=["x"]\nrestart={max_restarts=0}\n[workloads.r]\ncommand=["x"]\n'
    )
    for n, e in snap.items():
        nxt.restore(n, str(e["state"]), str(e["reason"]), e["stop_cause"], e["held"] is True)
    run(nxt, clock2, 2)
    assert rt2.launches == ["r"]
    nxt.start("h", clock2.now)
    run(nxt, clock2, 1)
    assert nxt.records["h"].state == State.READY and not nxt.snapshot()["h"]["held"]


def test_nxrd_exiting_is_not_an_operator_stop() -> None:
    sup, _rt, clock, _ = make('[workloads.w]\ncommand=["x"]\n')
    sup.tick(clock.now)
    sup.stop_all(clock.now)
    run(sup, clock, 1)
    snap = sup.snapshot()["w"]
    assert snap["state"] == "stopped" and snap["stop_cause"] == "nxrd-exiting"


def test_a_restart_waits_until_the_previous_runs_processes_are_gone() -> None:
    sup, rt, clock, _ = make(
        '[workloads.w]\ncommand=["x"]\nrestart={policy="always", delay="100ms"}\n'
    )
    sup.tick(clock.now)
    rt.leftovers.add("w")
    rt.slow_kill["w"] = 4  # cgroup.kill takes effect over several looks
    rt.exit("w", code=0)
    run(sup, clock, 0.35)
    assert rt.launches == ["w"] and sup.records["w"].reason == (
        "waiting for the previous run's processes to exit"
    )
    run(sup, clock, 1)
    assert rt.launches == ["w", "w"] and "w" not in rt.leftovers


def test_freeze_and_thaw() -> None:
    sup, rt, clock, log = make(
        '[workloads.w]\ncommand=["x"]\n[workloads.p]\ncommand=["x"]\nready={tcp=1}\n'
    )
    sup.tick(clock.now)
    sup.freeze("w", clock.now)
    assert rt.frozen["w"] and sup.records["w"].frozen
    assert log.since(0, "w")[-1].cause == "frozen by operator"
    with pytest.raises(NxrError, match="p is starting; only a ready workload can be frozen"):
        sup.freeze("p", clock.now)
    sup.thaw("w", clock.now)
    assert not rt.frozen["w"] and not sup.records["w"].frozen


def test_a_stop_thaws_first_so_the_stop_signal_can_act() -> None:
    sup, rt, clock, log = make('[workloads.w]\ncommand=["x"]\n')
    sup.tick(clock.now)
    sup.freeze("w", clock.now)
    sup.stop("w", clock.now)
    assert not rt.frozen["w"] and rt.procs["w"].signals == [15]
    assert [e.cause for e in log.since(0, "w")][-2:] == ["thawed to stop", "stopped by operator"]


def test_a_check_under_way_is_asked_again_soon_and_still_times_out() -> None:
    """The runtime answers None while a readiness check runs on its thread: the workload
    stays starting, the loop comes back for the answer within 50 ms (not a whole interval),
    and ready.timeout still ends a check that never answers."""
    sup, rt, clock, _log = make(
        '[workloads.db]\ncommand=["x"]\nready={tcp=5432, interval="2s", timeout="3s"}\n'
        '[workloads.api]\ncommand=["x"]\n'
    )
    rt.checking.add("db")
    sup.tick(clock.now)
    assert states(sup) == {"api": "ready", "db": "starting"}  # api did not wait on db's check
    assert sup.next_wakeup(clock.now) <= clock.now + 0.05
    run(sup, clock, 3.1, step=0.05)
    assert sup.records["db"].stop_cause == "not-ready"
    rt.checking.discard("db")
