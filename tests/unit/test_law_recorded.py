"""The control law replayed on a recorded trace: the windowed p99 of the demo's model server
at each 250 ms tick, measured in the test VM under a load step with static pinning (no
controller acting, so the trace is what the law would have seen at first). Exact decisions
with the demo profile's own settings, planned for the VM's 2 CPUs. A second recording keeps
every request, so the replay can give the law the latency since its last rung change too."""

from __future__ import annotations

import bisect
from dataclasses import replace
from pathlib import Path

from nxrd.controller.law import LadderState, Observation, settings, step
from nxrd.controller.loop import BUSY_WINDOW
from nxrd.controller.samples import SampleWindow
from nxrd.controller.spec import control_spec
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]


def trace(name: str) -> list[tuple[float, float | None]]:
    out = []
    for line in (ROOT / "tests/fixtures/traces" / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        t, v = line.split()
        out.append((float(t), None if v in ("-", "lost") else float(v)))
    return out


def test_the_demo_profile_on_a_recorded_load_step() -> None:
    profile = load_profile(ROOT / "profiles/demo.toml")
    plan = make_plan(profile, load_topology(ROOT / "tests/fixtures/topologies/vm-2cpu.json"))
    spec = control_spec(profile, plan)
    state, got, levels = LadderState(), [], []
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
        (28.25, "up", "stop-background"),  # background stopped before batch is frozen
        (29.25, "up", "freeze-batch"),  # the top of this profile's ladder
        # (no try at 25/s: the p99 was over 160 ms within every 10 s there)
        (57.0, "down", "stop-background"),  # 15/s from 50 s: comfortable for 4 s
        (67.0, "down", "freeze-background"),  # 10 s with no slack under act_below: a try
        (69.75, "up", "stop-background"),  # a late burst (p99 over 160 ms): up again
    ]
    assert max(levels) == 6 and min(levels) == -1  # no core to lend: embed keeps its one


def used(cpu: list[tuple[float, float | None]], now: float) -> float:
    """CPUs used over the BUSY_WINDOW before now, from the recorded CPU seconds so far."""

    def at(t: float) -> float:
        i = min(max(bisect.bisect([c[0] for c in cpu], t), 1), len(cpu) - 1)
        (t0, v0), (t1, v1) = cpu[i - 1], cpu[i]
        assert v0 is not None and v1 is not None
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    return (at(now) - at(now - BUSY_WINDOW)) / BUSY_WINDOW


def replay_requests(
    name: str, fresh: bool, cpu: str | None = None, share_below: float | None = None
) -> list[tuple[float, str, str]]:
    """The law every 250 ms over recorded requests, each reaching nxrd when it was answered
    (due + latency), through the controller's own sample window; with `fresh`, also the
    percentile of the requests since the last rung change, as nxrd's loop gives it; with
    `cpu`, the server's recorded CPU use as the share of its one core it used lately."""
    profile = load_profile(ROOT / "profiles/demo.toml")
    plan = make_plan(profile, load_topology(ROOT / "tests/fixtures/topologies/vm-2cpu.json"))
    spec = control_spec(profile, plan)
    if share_below is not None:
        spec = replace(spec, share_below=share_below)
    slo = profile.workloads["chat"].slo
    assert slo is not None
    rows = trace(name)
    cpus = trace(cpu) if cpu else []
    answered = sorted((due + v, v) for due, v in rows if v is not None)
    window, state, got, i, tick = SampleWindow(slo.window), LadderState(), [], 0, 0
    while tick * 0.25 <= rows[-1][0] + 2:
        now = tick * 0.25
        while i < len(answered) and answered[i][0] <= now:
            window.add(*answered[i])
            i += 1
        seen = window.percentile(0.99, now)
        age = {"chat": now - answered[i - 1][0]} if i else {}
        recent = {"chat": window.percentile_since(0.99, state.changed_at, now)} if fresh else {}
        busy = {"chat": used(cpus, now)} if cpus else {}
        obs = Observation({"chat": seen}, age, recent=recent, busy=busy)
        state, decisions = step(state, obs, spec, now)
        got += [(now, d.direction, d.rung) for d in decisions]
        tick += 1
    return got


def test_fresh_evidence_keeps_a_recorded_step_from_winding_the_ladder_up() -> None:
    # 13.5/s, then 40.5/s from 20 s: Poisson bursts push the window's p99 to 140-220 ms
    # for a few seconds at a time (the controller's run of the same arrivals was slow at
    # the same moments: the server's own queueing, which no rung removes)
    trace_name = "vm-pinned-step-requests.txt"
    assert replay_requests(trace_name, fresh=True) == [
        (4.25, "down", "share"),
        (23.0, "up", "static"),  # a burst after the step: sharing ends on the window
        # the requests that started after that were fast: it held, then relaxed
        (30.25, "down", "share"),
        (46.75, "up", "static"),  # the run's worst burst (over 200 ms): held at static
    ]
    # judged on the window alone, each burst climbs a rung a second while it ages out
    assert replay_requests(trace_name, fresh=False) == [
        (4.25, "down", "share"),
        (23.0, "up", "static"),
        (24.0, "up", "cap-75%"),
        (25.0, "up", "cap-50%"),
        (26.0, "up", "cap-25%"),
        (30.25, "down", "cap-50%"),
        (34.25, "down", "cap-75%"),
        (44.25, "down", "static"),  # 10 s inside the band: a try
        (46.75, "up", "cap-75%"),
        (47.75, "up", "cap-50%"),
        (48.75, "up", "cap-25%"),
        (49.75, "up", "freeze-background"),
    ]


def test_a_recorded_load_step_ends_sharing_on_the_servers_cpu_use() -> None:
    # 9.5/s, 28.5/s from 20 s, 19/s from 50 s; the server used about 0.25, 0.56 and 0.50 of
    # its CPU in the three phases
    requests, cpu = "vm-pinned-3step-requests.txt", "vm-pinned-3step-cpu.txt"
    assert replay_requests(requests, True, cpu, share_below=0.5) == [
        (4.25, "down", "share"),
        (22.0, "up", "static"),  # 2 s after the step, on its CPU use alone
        (32.25, "up", "cap-75%"),  # the phase's slow window (pinning had it too)
        (46.25, "down", "static"),  # comfortable again, but too busy to share
        (60.75, "up", "cap-75%"),
        (67.75, "down", "static"),  # too busy to share until the load ends at 70 s
    ]
    # on latency alone, sharing went on for 12 s at 60% and through most of the 40% phase;
    # so it does with the demo profile's share_below of 0.7, over the server's 0.56
    assert replay_requests(requests, True, cpu) == replay_requests(requests, fresh=True)
    assert replay_requests(requests, fresh=True) == [
        (4.25, "down", "share"),
        (32.25, "up", "static"),
        (46.25, "down", "share"),
        (60.75, "up", "static"),
        (67.75, "down", "share"),
    ]
