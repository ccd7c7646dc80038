"""The control law replayed on a recorded trace: the windowed p99 of the demo's model server
at each 250 ms tick, measured in the test VM under a load step with static pinning (no
controller acting, so the trace is what the law would have seen at first). Exact decisions
with the demo profile's own settings, planned for the VM's 2 CPUs."""

from __future__ import annotations

from pathlib import Path

from nxrd.controller.law import Observation, State, settings, step
from nxrd.controller.spec import control_spec
from nxrd.plan import make_plan
from nxrd.plan.topology import load_topology
from nxrd.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]


def trace(name: str) -> list[tuple[float, float | None]]:
    out = []
    for line in (ROOT / "tests/fixtures/traces" / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        t, v = line.split()
        out.append((float(t), None if v == "-" else float(v)))
    return out


def test_the_demo_profile_on_a_recorded_load_step() -> None:
    profile = load_profile(ROOT / "profiles/demo.toml")
    plan = make_plan(profile, load_topology(ROOT / "tests/fixtures/topologies/vm-2cpu.json"))
    spec = control_spec(profile, plan)
    state, got, levels = State(), [], []
    for t, p99 in trace("vm-pinned-step.txt"):
        state, decisions = step(state, Observation({"chat": p99}), spec, t)
        got += [(t, d.direction, d.rung) for d in decisions]
        levels.append(state.level)
        if state.level == -1:
            assert settings(state, spec).files["embed"]["cpuset.cpus"] == "0-1"
    assert got == [
        (4.25, "down", "share"),  # 10/s: p99 far under 200 ms for 4 s
        (23.25, "up", "static"),  # 3 s after the step to 25/s: sharing ends first
        (24.25, "up", "cap-75%"),  # then one rung per cooldown (1 s) while slack stays low
        (25.25, "up", "cap-50%"),  # (no weight rung: embed never runs on chat's CPU)
        (26.25, "up", "cap-25%"),
        (27.25, "up", "freeze-background"),
        (28.25, "up", "freeze-batch"),  # the top of this profile's ladder
        (57.0, "down", "freeze-background"),  # 15/s from 50 s: comfortable for 4 s
        (69.75, "up", "freeze-batch"),  # a late burst (p99 over 160 ms): up again
    ]
    assert max(levels) == 5 and min(levels) == -1  # no core to lend: embed keeps its one
