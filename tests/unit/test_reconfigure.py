"""Applying a changed profile: the diff it prints and what the supervisor does with it."""

from __future__ import annotations

from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.plan.diff import LIVE, NEXT_START, RESTART, START, STOP, diff
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES
from tests.unit.test_supervisor import Clock, run, states

TOPO = load_topology(TOPOLOGIES / "smt16-1gpu.json")

BASE = """
[workloads.chat]
command = ["chat"]
class = "latency-critical"
cpus = 2
memory_max = "4GiB"

[workloads.batch]
command = ["batch", "--fast"]
class = "batch"
cpus = 2
"""


def both(old: str, new: str):  # type: ignore[no-untyped-def]
    a, b = parse_profile(old), parse_profile(new)
    return (a, make_plan(a, TOPO)), (b, make_plan(b, TOPO))


def test_no_change_is_empty() -> None:
    assert diff(*both(BASE, BASE)) == []


def test_each_kind_of_change_says_how_it_lands() -> None:
    new = (
        BASE.replace('memory_max = "4GiB"', 'memory_max = "6GiB"\ncpu_weight = 500')
        .replace('"batch", "--fast"', '"batch", "--slow"')
        .replace("[workloads.batch]", '[workloads.index]\ncommand=["i"]\n[workloads.batch]')
    )
    got = {(c.workload, c.what): (c.old, c.new, c.effect) for c in diff(*both(BASE, new))}
    assert got[("chat", "memory.max")] == (str(4 << 30), str(6 << 30), LIVE)
    assert got[("chat", "cpu.weight")][1:] == ("500", LIVE)
    assert got[("batch", "command")] == (
        '["batch", "--fast"]',
        '["batch", "--slow"]',
        RESTART,
    )
    assert got[("index", "added")][2] == START
    # memory protection of the parent follows; nothing else changed
    assert {w for w, _ in got} == {"chat", "batch", "index", ""}
    removed = diff(*both(new, BASE))
    assert [(c.workload, c.effect) for c in removed if c.workload == "index"] == [("index", STOP)]


def test_more_cores_change_live_and_threads_wait_for_the_next_start() -> None:
    new = BASE.replace("cpus = 2\nmemory_max", "cpus = 4\nmemory_max")
    changes = [c for c in diff(*both(BASE, new)) if c.workload == "chat"]
    effects = {c.what: c.effect for c in changes}
    assert effects["cpuset.cpus"] == LIVE
    assert effects["threads"] == NEXT_START
    assert RESTART not in effects.values()  # OMP_NUM_THREADS alone does not restart


def test_a_change_to_the_cpus_nxrd_itself_keeps_to_is_listed() -> None:
    new = '[host]\nreserved_cpus = "0-3"\n' + BASE
    (change,) = [c for c in diff(*both(BASE, new)) if c.what == "nxrd/cpuset.cpus"]
    assert (change.workload, change.old, change.new, change.effect) == (
        "",
        "0,16",
        "0-3",
        LIVE,
    )  # CPU 0 and its sibling


def test_class_move_restarts() -> None:
    new = BASE.replace('class = "batch"', 'class = "background"')
    changes = [c for c in diff(*both(BASE, new)) if c.workload == "batch"]
    assert [(c.what, c.old, c.new, c.effect) for c in changes] == [
        ("class", "batch", "background", RESTART)
    ]


def _running(text: str) -> tuple[Supervisor, FakeRuntime, Clock, EventLog]:
    profile = parse_profile(text)
    rt, clock, log = FakeRuntime(), Clock(), EventLog()
    sup = Supervisor(profile, make_plan(profile, TOPO), rt, log, clock, jitter=lambda: 0.5)
    run(sup, clock, 0.5)
    return sup, rt, clock, log


def _apply(sup: Supervisor, clock: Clock, text: str) -> None:
    profile = parse_profile(text)
    sup.reconfigure(profile, make_plan(profile, TOPO), clock.now, "test")


def test_live_change_keeps_the_process() -> None:
    sup, rt, clock, _ = _running(BASE)
    pid = sup.records["chat"].pid
    _apply(sup, clock, BASE.replace("cpus = 2\nmemory_max", "cpus = 4\nmemory_max"))
    run(sup, clock, 1)
    assert sup.records["chat"].pid == pid and rt.launches == ["chat", "batch"]
    assert sup.records["chat"].plan.cpu_count == 4  # the next start uses the new plan


def test_changed_command_restarts_with_the_new_spec() -> None:
    sup, rt, clock, log = _running(BASE)
    _apply(sup, clock, BASE.replace('"batch", "--fast"', '"batch", "--slow"'))
    run(sup, clock, 1)
    rec = sup.records["batch"]
    assert rt.launches == ["chat", "batch", "batch"]
    assert rec.spec.command == ("batch", "--slow") and rec.state.value == "ready"
    trail = [(e.new, e.cause) for e in log.since(0, "batch")][2:]
    assert [new for new, _ in trail] == ["stopping", "stopped", "pending", "starting", "ready"]
    assert trail[0][1] == "profile changed (test)"


def test_class_move_stops_in_the_old_leaf_and_starts_in_the_new() -> None:
    sup, rt, clock, _ = _running(BASE)
    old_leaf = sup.records["batch"].plan.cgroup
    _apply(sup, clock, BASE.replace('class = "batch"', 'class = "background"'))
    run(sup, clock, 1)
    rec = sup.records["batch"]
    assert rec.plan.cgroup != old_leaf and rec.plan.workload_class == "background"
    assert rt.launches == ["chat", "batch", "batch"] and rec.state.value == "ready"


def test_removed_workload_stops_and_disappears_added_one_starts() -> None:
    sup, rt, clock, _ = _running(BASE)
    new = BASE.split("[workloads.batch]")[0] + '[workloads.index]\ncommand=["i"]\n'
    _apply(sup, clock, new)
    run(sup, clock, 1)
    assert states(sup) == {"chat": "ready", "index": "ready"}
    assert "batch" in rt.killed or rt.procs["batch"].ended is not None
    assert "batch" not in rt.cgroups


def test_stopped_by_operator_stays_stopped_but_takes_the_new_spec() -> None:
    sup, _rt, clock, _ = _running(BASE)
    sup.stop("batch", clock.now)
    run(sup, clock, 1)
    _apply(sup, clock, BASE.replace('"batch", "--fast"', '"batch", "--slow"'))
    run(sup, clock, 1)
    assert states(sup)["batch"] == "stopped"
    assert sup.records["batch"].spec.command == ("batch", "--slow")
