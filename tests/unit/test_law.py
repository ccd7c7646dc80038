"""The control law on synthetic traces: exact decisions, and properties over random ones."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nxrd.controller.law import LadderState, Lower, Observation, Spec, Target, ladder, step
from nxrd.controller.law import settings as rung_settings

CHAT = Target("chat", slo=0.2, cpus=(0, 1))
SPEC = Spec(
    targets=(CHAT,),
    lowers=(
        Lower("embed", "batch", cpus=(2, 3, 4, 5), weight=100, may_stop=True),
        Lower("index", "background", cpus=(2, 3, 4, 5), weight=None),
    ),
    share=False,  # the ladder above static; sharing is tried on its own (SHARING)
)


def run(
    trace: list[float | None], spec: Spec = SPEC, dt: float = 0.5
) -> list[tuple[float, str, str]]:
    """(time, direction, rung) of every decision over a latency trace of chat."""
    state, out = LadderState(), []
    for i, seen in enumerate(trace):
        now = i * dt
        state, decisions = step(state, Observation({"chat": seen}), spec, now)
        out += [(now, d.direction, d.rung) for d in decisions]
    return out


def test_the_ladder_of_this_profile() -> None:
    assert ladder(SPEC) == [  # no "weight": nothing lower runs on chat's cores
        "cap-75%",
        "cap-50%",
        "cap-25%",
        "core-1",
        "core-2",  # no more than chat has
        "freeze-background",
        "freeze-batch",
        "stop-batch",
    ]


def test_a_violation_climbs_one_rung_per_cooldown() -> None:
    # 0.25 s observed vs 0.2 s SLO: slack -25% for 3 s; ticks every 0.5 s, cooldown 2 s
    assert run([0.25] * 7) == [(0.0, "up", "cap-75%"), (2.0, "up", "cap-50%")]


def test_inside_the_band_nothing_moves_until_probe_after() -> None:
    # slack 15%: above act_below (10%), under relax_above (30%)
    assert run([0.25] + [0.17] * 29) == [(0.0, "up", "cap-75%")]
    assert run([0.25] + [0.17] * 29, replace(SPEC, probe_after=None)) == [(0.0, "up", "cap-75%")]


def test_a_rung_held_inside_the_band_is_tried_one_lower() -> None:
    held = [(0.25, 0.25)] * 5 + [(0.17, 0.17)] * 60  # cap-50% from 2 s, then 15% slack
    assert fresh(held) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (17.0, "down", "cap-75%"),  # probe_after (15 s) inside the band
        (32.0, "down", "static"),  # that held for as long again: one more
    ]
    # the requests since the rung was reached were at risk (5%): that rung is not tried
    assert fresh([(0.25, 0.25)] * 5 + [(0.17, 0.19)] * 60)[2:] == []
    assert fresh(held, replace(SPEC, probe_after=None))[2:] == []


def test_a_try_answered_by_a_climb_doubles_the_wait_before_the_next() -> None:
    band, at_risk = (0.17, 0.17), [(0.19, 0.19)] * 5  # 15% slack; 5%, under act_below
    held = [(0.25, 0.25)] * 5 + [band] * 30
    trace = held + at_risk + [band] * 60 + at_risk + [band] * 121
    assert fresh(trace) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (17.0, "down", "cap-75%"),  # tried
        (19.0, "up", "cap-50%"),  # answered by a climb (after the cooldown)
        (49.5, "down", "cap-75%"),  # 2 x 15 s after the last tick at risk (19.5 s)
        (51.5, "up", "cap-50%"),
        (112.0, "down", "cap-75%"),  # 4 x 15 s after 52 s
    ]


def test_a_held_try_resets_the_wait_and_the_wait_stops_doubling_at_eight_times() -> None:
    tried = LadderState(level=1, changed_at=0.0, probed=True, failed=2)
    at_risk = Observation({"chat": 0.19}, recent={"chat": 0.19})
    assert step(tried, at_risk, SPEC, 5.0)[0].failed == 3  # answered within probe_after
    assert step(tried, at_risk, SPEC, 20.0)[0].failed == 0  # it held for 15 s: a success
    band = Observation({"chat": 0.17}, recent={"chat": 0.17})
    failed_often = LadderState(level=2, changed_at=0.0, failed=5)
    assert step(failed_often, band, SPEC, 119.5)[1] == []
    assert step(failed_often, band, SPEC, 120.0)[1][0].rung == "cap-75%"  # 8 x 15 s


def test_without_per_request_latency_the_wait_counts_from_the_last_tick_at_risk() -> None:
    # at the top rung, over the SLO until 20 s (nothing left to climb), then in the band:
    # a scraped source has no recent requests to say the rung is fine, so the try waits
    # probe_after from the last tick at risk, not from the rung's start
    state, got = LadderState(level=len(ladder(SPEC)), changed_at=0.0), []
    for i in range(80):
        now = i * 0.5
        obs = Observation({"chat": 0.25 if now < 20 else 0.17})
        state, decisions = step(state, obs, SPEC, now)
        got += [(now, d.rung, d.reason) for d in decisions]
    assert got == [(34.5, "freeze-batch", "15.0s with no slack under 10%: trying a rung lower")]


def test_recovery_steps_down_after_sustained_comfort() -> None:
    trace = [0.25] * 5 + [0.1] * 30  # 50% slack from t=2.5
    assert run(trace) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (7.5, "down", "cap-75%"),  # comfortable since 2.5 s: 5 s later
        # no per-request latency to show the rung below keeps the SLO: relax_after again
        (12.5, "down", "static"),
    ]


def test_oscillating_latency_never_moves_faster_than_the_cooldown() -> None:
    trace = [0.25, 0.05] * 20  # violating and comfortable on alternate ticks
    got = run(trace)
    assert got == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (4.0, "up", "cap-25%"),
        (6.0, "up", "core-1"),
        (8.0, "up", "core-2"),
        (10.0, "up", "freeze-background"),
        (12.0, "up", "freeze-batch"),
        (14.0, "up", "stop-batch"),
    ]
    # comfort never lasts 5 s, so it never steps down: escalation wins, as it should


def test_stale_or_missing_latency_falls_back_to_static() -> None:
    state, _ = step(LadderState(), Observation({"chat": 0.3}), SPEC, 0.0)
    state, _ = step(state, Observation({"chat": 0.3}), SPEC, 2.0)
    assert state.level == 2
    state, d = step(state, Observation({"chat": 0.3}, age={"chat": 6.0}), SPEC, 4.0)
    assert [(x.direction, x.rung) for x in d] == [("fallback", "cap-75%")]
    assert d[0].reason == "latency of chat missing or stale: back towards static values"
    state, d = step(state, Observation({"chat": None}), SPEC, 6.0)
    assert (state.level, d[0].rung) == (0, "static")
    assert step(state, Observation({"chat": None}), SPEC, 8.0)[1] == []


def test_decisions_carry_their_inputs() -> None:
    _, (d,) = step(
        LadderState(), Observation({"chat": 0.25}, signals={"embed": {"cpu_some": 40.0}}), SPEC, 0.0
    )
    assert d.inputs == {
        "observed": {"chat": 0.25},
        "slo": {"chat": 0.2},
        "slack": {"chat": -0.25},
        "signals": {"embed": {"cpu_some": 40.0}},
    }
    assert d.reason == "chat slack -25% under 10%"


def test_two_targets_the_worst_slack_drives_and_gets_the_cores() -> None:
    spec = Spec(
        targets=(CHAT, Target("rank", slo=0.05, cpus=(6,))),
        lowers=(Lower("embed", "batch", cpus=(2, 3, 4, 5), weight=100),),
    )
    # chat comfortable (50% slack), rank violating: climb; never relax while rank violates
    state = LadderState()
    for i in range(12):
        state, _ = step(state, Observation({"chat": 0.1, "rank": 0.06}), spec, i * 2.0)
    assert ladder(spec)[state.level - 1] == "freeze-batch"
    s = rung_settings(state, spec)
    assert s.files["rank"] == {"cpuset.cpus": "4-6"}  # cores 5, 4 lent to rank (chat has 2)
    assert s.files["chat"] == {"cpuset.cpus": "0-1"}
    assert s.files["embed"]["cpuset.cpus"] == "2-3"
    assert s.frozen == {"embed"}


def test_settings_at_each_rung() -> None:
    def at(level: int) -> dict[str, dict[str, str]]:
        return rung_settings(
            LadderState(level=level, loans=((5, "chat"),) if level >= 4 else ()), SPEC
        ).files

    assert at(0)["embed"] == {"cpu.weight": "100", "cpuset.cpus": "2-5", "cpu.max": "max 100000"}
    assert at(1)["embed"]["cpu.max"] == "300000 100000"  # 75% of 4 cores
    assert at(2)["embed"]["cpu.max"] == "200000 100000"  # 50% of 4 cores
    assert at(4)["embed"]["cpu.max"] == "75000 100000"  # 25% of the 3 cores it keeps
    assert at(4)["embed"]["cpu.weight"] == "100"  # no weight rung: weights act per CPU
    assert at(4)["chat"] == {"cpuset.cpus": "0-1,5"}
    # background beside batch: held at its floor (0.1 CPU), or it takes what batch leaves
    assert at(1)["index"] == {"cpuset.cpus": "2-5", "cpu.max": "10000 100000"}
    assert at(4)["index"] == {"cpuset.cpus": "2-4", "cpu.max": "10000 100000"}
    alone = Spec((CHAT,), (Lower("index", "background", cpus=(2, 3, 4, 5), weight=None),))
    assert rung_settings(LadderState(level=2), alone).files["index"]["cpu.max"] == "200000 100000"
    top = rung_settings(LadderState(level=8), SPEC)
    assert top.frozen == {"embed", "index"} and top.stopped == {"embed"}


BY_PRIORITY = Spec(
    targets=(CHAT,),
    lowers=(
        Lower("report", "batch", cpus=(2, 3), weight=100, may_stop=True, priority=900),
        Lower("reindex", "batch", cpus=(4, 5), weight=100, may_stop=True, priority=100),
        Lower("scrub", "background", cpus=(6,), weight=None, may_stop=True, priority=300),
        Lower("warm", "background", cpus=(7,), weight=None, may_stop=True, priority=10),
    ),
    share=False,
)


def test_within_a_class_the_lower_priority_is_acted_on_first() -> None:
    """Cap rungs are staggered: the lower priority a step ahead of the higher one, which is
    capped to the end in the rungs after; freezes and stops go a priority at a time, and
    background is stopped before any batch work is frozen."""
    assert ladder(BY_PRIORITY) == [
        "cap-75%",
        "cap-50%/75%",
        "cap-25%/50%",
        "cap-25%/25%",
        "core-1",
        "core-2",
        "freeze-background@10",
        "freeze-background@300",
        "stop-background@10",
        "stop-background@300",
        "freeze-batch@100",
        "freeze-batch@900",
        "stop-batch@100",
        "stop-batch@900",
    ]

    def at(level: int) -> dict[str, str]:
        files = rung_settings(LadderState(level=level), BY_PRIORITY).files
        return {name: f["cpu.max"] for name, f in files.items() if "cpu.max" in f}

    uncapped = "max 100000"
    assert at(1) == {  # background (not beside batch) follows the lowest batch priority
        "reindex": "150000 100000",
        "report": uncapped,
        "scrub": "75000 100000",
        "warm": "75000 100000",
    }
    assert at(2)["reindex"] == "100000 100000" and at(2)["report"] == "150000 100000"
    assert at(3)["reindex"] == "50000 100000" and at(3)["report"] == "100000 100000"
    assert at(4)["reindex"] == at(4)["report"] == "50000 100000"

    def acted(level: int) -> tuple[set[str], set[str]]:
        s = rung_settings(LadderState(level=level), BY_PRIORITY)
        return set(s.frozen), set(s.stopped)

    assert acted(7) == ({"warm"}, set())
    assert acted(10) == ({"warm", "scrub"}, {"warm", "scrub"})
    assert acted(11) == ({"warm", "scrub", "reindex"}, {"warm", "scrub"})
    everything = {"warm", "scrub", "reindex", "report"}
    assert acted(14) == (everything, everything)


def test_one_priority_keeps_the_ladder_unchanged() -> None:
    lowers = tuple(replace(w, priority=500) for w in BY_PRIORITY.lowers)
    assert ladder(replace(BY_PRIORITY, lowers=lowers)) == [
        "cap-75%",
        "cap-50%",
        "cap-25%",
        "core-1",
        "core-2",
        "freeze-background",
        "stop-background",
        "freeze-batch",
        "stop-batch",
    ]


def test_weights_are_cut_only_where_a_lower_class_shares_a_targets_cpu() -> None:
    ui = Lower("ui", "interactive", cpus=(0, 1, 2, 3), weight=100)
    embed = Lower("embed", "batch", cpus=(2, 3), weight=100)
    pinned = Spec((CHAT,), (embed,))  # chat alone on 0-1
    assert "weight" not in ladder(pinned)
    overlapping = Spec((CHAT,), (ui, embed))  # ui may run on chat's 0-1
    assert ladder(overlapping)[0] == "weight"
    anywhere = Spec((Target("chat", slo=0.2),), (embed,))  # chat not pinned: it runs anywhere
    assert ladder(anywhere)[0] == "weight"
    files = rung_settings(LadderState(level=1), overlapping).files
    assert (files["ui"]["cpu.weight"], files["embed"]["cpu.weight"]) == ("50", "10")


latencies = st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=1, max_size=200)


@settings(max_examples=300, deadline=None)
# comfortable throughout and too busy to share: random latencies are rarely comfortable
# for relax_after, so this one is given
@example(trace=[0.05] * 60, dt=0.25, share=True, recents=None, busies=[0.9], costs=None)
@given(
    trace=latencies,
    dt=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    share=st.booleans(),
    recents=st.one_of(st.none(), latencies),
    busies=st.one_of(st.none(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50)),
    costs=st.one_of(st.none(), st.lists(st.floats(0.01, 0.1), min_size=1, max_size=50)),
)
def test_never_caps_a_target_and_never_changes_faster_than_the_cooldown(
    trace: list[float | None],
    dt: float,
    share: bool,
    recents: list[float | None] | None,
    busies: list[float] | None,
    costs: list[float] | None,
) -> None:
    spec = replace(SPEC, share=share, judge=costs is not None)
    state, last_change = LadderState(), None
    for i, seen in enumerate(trace):
        now = i * dt
        recent = {} if recents is None else {"chat": recents[i % len(recents)]}
        busy = {} if busies is None else {"chat": busies[i % len(busies)]}
        cost = {} if costs is None else {"chat": costs[i % len(costs)]}
        obs = Observation({"chat": seen}, recent=recent, busy=busy, cost=cost)
        state, decisions = step(state, obs, spec, now)
        if decisions:
            if last_change is not None:
                assert now - last_change >= SPEC.cooldown
            last_change = now
        s = rung_settings(state, spec)
        assert set(s.files["chat"]) == {"cpuset.cpus"}  # never cpu.max, never a weight cut
        assert "chat" not in s.frozen | s.stopped
        assert (-1 if share else 0) <= state.level <= len(ladder(spec))
        if seen is None:
            assert state.level >= 0 or not decisions  # no latency: never towards sharing
        if busy.get("chat", 0.0) >= spec.share_below:
            assert state.level >= 0 or not decisions  # too busy: never towards sharing


SHARING = replace(SPEC, share=True)


def test_comfort_shares_the_targets_cores_and_the_first_risk_takes_them_back() -> None:
    trace = [0.1] * 14 + [0.19] * 5 + [0.1] * 24  # 50% slack, then 5% (under act_below)
    assert run(trace, SHARING) == [
        (5.0, "down", "share"),  # comfortable since 0 s: relax_after (5 s) later
        (7.0, "up", "static"),  # slack 5%: back to static in one step, not to the ladder
        (9.0, "up", "cap-75%"),  # still 5% two seconds later (cooldown): the ladder
        (14.5, "down", "static"),  # comfortable again from 9.5 s
        (19.5, "down", "share"),  # relax_after after the last step: no per-request latency
    ]


def test_sharing_ends_when_latency_goes_missing() -> None:
    state = LadderState(level=-1, changed_at=0.0)
    state, d = step(state, Observation({"chat": None}), SHARING, 1.0)
    assert d == []  # not within the cooldown
    state, d = step(state, Observation({"chat": None}), SHARING, 2.0)
    assert (state.level, d[0].direction, d[0].rung) == (0, "fallback", "static")


def test_settings_when_sharing() -> None:
    s = rung_settings(LadderState(level=-1), SHARING).files
    assert s["embed"] == {"cpu.weight": "100", "cpuset.cpus": "0-5", "cpu.max": "max 100000"}
    assert s["index"] == {"cpuset.cpus": "2-5", "cpu.max": "max 100000"}  # background: not
    assert s["chat"] == {"cpuset.cpus": "0-1"}  # its own cores, nothing lent or taken


def test_a_busy_target_ends_sharing_before_its_latency_does() -> None:
    # latency comfortable throughout (50% slack); chat's use of its cores: 20%, then 60%
    # from 6 s, then 45% (under share_below, over four fifths of it), then 30% from 17 s
    busy = [0.2] * 12 + [0.6] * 4 + [0.45] * 18 + [0.3] * 12
    state, got = LadderState(), []
    for i, used in enumerate(busy):
        obs = Observation({"chat": 0.1}, busy={"chat": used})
        state, decisions = step(state, obs, SHARING, i * 0.5)
        got += [(i * 0.5, d.direction, d.rung, d.reason) for d in decisions]
    assert got == [
        (5.0, "down", "share", "every slack above 30% for 5.0s"),
        (7.0, "up", "static", "chat uses 60% of its cores, 50% or more"),  # the cooldown
        # under 40% again from 17 s: relax_after (5 s) from then, not from 7.5 s
        (22.0, "down", "share", "every slack above 30% for 5.0s"),
    ]
    # judged on its latency alone, sharing would have gone on
    assert run([0.1] * len(busy), SHARING) == [(5.0, "down", "share")]


def test_the_busiest_target_ends_sharing_and_a_busy_value_that_is_no_number_counts_as_busy() -> (
    None
):
    spec = replace(SHARING, targets=(CHAT, Target("rank", slo=0.05, cpus=(6,))))
    sharing = LadderState(level=-1, changed_at=0.0)
    fine = {"chat": 0.05, "rank": 0.01}
    for busy in ({"chat": 0.2, "rank": 0.5}, {"chat": float("nan"), "rank": 0.2}):
        state, (d,) = step(sharing, Observation(fine, busy=busy), spec, 5.0)
        assert (state.level, d.rung) == (0, "static")
    assert step(sharing, Observation(fine, busy={"chat": 0.2, "rank": 0.49}), spec, 5.0)[1] == []


def test_nothing_to_share_without_batch() -> None:
    for lower in (
        Lower("ui", "interactive", cpus=(2, 3), weight=100),
        Lower("index", "background", cpus=(2, 3), weight=None),
    ):
        assert run([0.1] * 30, Spec((CHAT,), (lower,), share=True)) == []


def fresh(
    trace: list[tuple[float, float | None]], spec: Spec = SPEC, dt: float = 0.5
) -> list[tuple[float, str, str]]:
    """Like run(), with the latency since the last change beside the windowed one."""
    state, out = LadderState(), []
    for i, (seen, recent) in enumerate(trace):
        now = i * dt
        obs = Observation({"chat": seen}, recent={"chat": recent})
        state, decisions = step(state, obs, spec, now)
        out += [(now, d.direction, d.rung) for d in decisions]
    return out


def test_a_burst_that_is_over_climbs_once_and_holds() -> None:
    # the window keeps a burst's 0.25 s for 4 s; the requests after the first rung are fast
    trace = [(0.25, 0.25)] + [(0.25, 0.08)] * 8 + [(0.08, 0.08)] * 14
    assert fresh(trace) == [
        (0.0, "up", "cap-75%"),
        (9.5, "down", "static"),  # comfortable from 4.5 s: relax_after later
    ]
    # judged on the window alone, the same burst winds the ladder up two more rungs
    assert run([seen for seen, _ in trace]) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (4.0, "up", "cap-25%"),
        (9.5, "down", "cap-50%"),
    ]


def test_stepping_down_goes_on_a_rung_per_cooldown_while_the_requests_since_are_fine() -> None:
    trace = [(0.25, 0.25)] * 5 + [(0.1, 0.1)] * 30
    assert fresh(trace, SHARING) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),
        (7.5, "down", "cap-75%"),  # comfortable since 2.5 s: relax_after later
        (9.5, "down", "static"),  # the requests at cap-75% were comfortable: a cooldown
        (11.5, "down", "share"),
    ]


def test_stepping_down_waits_relax_after_again_when_the_rung_below_is_not_proven() -> None:
    climbed = [(0.25, 0.25)] * 5 + [(0.1, 0.1)] * 11  # down to cap-75% at 7.5 s
    # the window stays comfortable, the requests since the step down are in the band (15%)
    assert fresh(climbed + [(0.1, 0.17)] * 14)[2:] == [
        (7.5, "down", "cap-75%"),
        (12.5, "down", "static"),  # relax_after since that step
    ]
    # no request since the step down: no proof either
    assert fresh(climbed + [(0.1, None)] * 14)[2:] == [
        (7.5, "down", "cap-75%"),
        (12.5, "down", "static"),
    ]
    # the window leaves comfort (15%) at 8-8.5 s: comfort starts over, from 9 s
    assert fresh(climbed + [(0.17, 0.1)] * 2 + [(0.1, 0.1)] * 20)[2:] == [
        (7.5, "down", "cap-75%"),
        (14.0, "down", "static"),
    ]


def test_a_step_down_proven_needs_every_targets_requests_and_one_slo_of_them() -> None:
    rank = Target("rank", slo=0.05, cpus=(6,))
    spec = replace(SPEC, targets=(CHAT, rank))
    stepped = LadderState(level=2, changed_at=10.0, comfortable_since=5.0)  # stepped down at 10 s
    fine = {"chat": 0.05, "rank": 0.01}
    # rank is scraped (no per-request latency): chat's fast requests prove nothing for it
    scraped = Observation(fine, recent={"chat": 0.05})
    assert step(stepped, scraped, spec, 12.0)[1] == []
    assert step(stepped, scraped, spec, 15.0)[1][0].rung == "cap-75%"  # relax_after
    state, (d,) = step(stepped, Observation(fine, recent=fine), spec, 12.0)
    assert (state.level, d.reason) == (1, "every slack above 30% for 7.0s, and at the last rung")
    # an SLO longer than the cooldown: a request slower than the time since the step is
    # still running, unseen; the requests answered so far prove nothing until one SLO passed
    slow = Target("chat", slo=3.0, cpus=(0, 1))
    obs = Observation({"chat": 1.0}, recent={"chat": 1.0})
    assert step(stepped, obs, replace(SPEC, targets=(slow,)), 12.0)[1] == []
    assert step(stepped, obs, replace(SPEC, targets=(slow,)), 13.0)[1][0].rung == "cap-75%"


def test_latency_still_high_since_the_last_rung_climbs_at_the_cooldowns_pace() -> None:
    assert fresh([(0.25, 0.25)] * 7) == [(0.0, "up", "cap-75%"), (2.0, "up", "cap-50%")]
    # at risk within the SLO (slack 5%) counts as much as over it
    assert fresh([(0.19, 0.19)] * 5) == [(0.0, "up", "cap-75%"), (2.0, "up", "cap-50%")]


def test_no_request_since_the_last_rung_holds() -> None:
    assert fresh([(0.25, 0.25)] + [(0.25, None)] * 6) == [(0.0, "up", "cap-75%")]


def test_sharing_ends_on_the_window_alone() -> None:
    state = LadderState(level=-1, changed_at=0.0)
    obs = Observation({"chat": 0.19}, recent={"chat": 0.05})  # the slow ones came earlier
    state, d = step(state, obs, SHARING, 3.0)
    assert (state.level, d[0].rung) == (0, "static")
    assert d[0].inputs["recent"] == {"chat": 0.05}
    state, d = step(state, obs, SHARING, 5.0)
    assert d == []  # at static the recent requests decide: they are fine


def test_two_targets_the_one_still_slow_drives_the_climb() -> None:
    spec = Spec(
        targets=(CHAT, Target("rank", slo=0.05, cpus=(6,))),
        lowers=(Lower("embed", "batch", cpus=(2, 3, 4, 5), weight=100),),
    )
    # chat's window is the worst (-50%) but its recent requests are fine; rank's window
    # (slack 4%) and its recent requests are at risk: rank drives, and gets the core
    obs = Observation({"chat": 0.3, "rank": 0.048}, recent={"chat": 0.05, "rank": 0.049})
    state = LadderState(level=3, changed_at=0.0)
    state, (d,) = step(state, obs, spec, 2.0)
    assert (d.rung, d.reason) == ("core-1", "rank slack 4% under 10%")
    assert state.loans == ((5, "rank"),)
    recovered = Observation({"chat": 0.3, "rank": 0.048}, recent={"chat": 0.05, "rank": 0.01})
    assert step(state, recovered, spec, 4.0)[1] == []


JUDGING = replace(SPEC, judge=True)


def judged(
    trace: list[tuple[float, float | None]],
    spec: Spec = JUDGING,
    dt: float = 0.5,
    state: LadderState | None = None,
) -> list[tuple[float, str, str]]:
    """Like run(), with chat's CPU seconds per request beside its latency (None: unknown)."""
    state, out = state or LadderState(), []
    for i, (seen, cost) in enumerate(trace):
        now = i * dt
        obs = Observation({"chat": seen}, cost={} if cost is None else {"chat": cost})
        state, decisions = step(state, obs, spec, now)
        out += [(now, d.direction, d.rung) for d in decisions]
    return out


def test_a_climb_that_makes_no_request_cheaper_steps_back_and_holds_the_ladder_down() -> None:
    # over the SLO throughout, each request 40 ms of CPU at every rung: the latency is
    # chat's own queue, which capping batch on other cores does not shorten
    assert judged([(0.25, 0.040)] * 71) == [
        (0.0, "up", "cap-75%"),
        (2.0, "down", "static"),  # 2 s of requests at cap-75%: no cheaper
        (32.0, "up", "cap-75%"),  # held at static for 30 s, then judged again
        (34.0, "down", "static"),
    ]
    state, (d,) = step(
        LadderState(), Observation({"chat": 0.25}, cost={"chat": 0.040}), JUDGING, 0.0
    )
    state, (d,) = step(state, Observation({"chat": 0.25}, cost={"chat": 0.039}), JUDGING, 2.0)
    assert d.reason == (
        "cap-75% did not make requests 10% cheaper (chat 39.0 ms of CPU a request, 40.0 ms before): "
        "back to static, and no higher for 30s unless requests get 10% dearer"
    )
    assert d.inputs["cost"] == {"chat": 0.039}
    # without judging, the same trace winds the ladder up a rung per cooldown
    assert judged([(0.25, 0.040)] * 5, SPEC) == [(0.0, "up", "cap-75%"), (2.0, "up", "cap-50%")]


def test_a_climb_that_makes_requests_cheaper_stays_and_the_next_is_judged_from_there() -> None:
    trace = [(0.25, 0.040)] + [(0.25, 0.030)] * 8  # interference: 25% cheaper at cap-75%
    assert judged(trace) == [
        (0.0, "up", "cap-75%"),
        (2.0, "up", "cap-50%"),  # cap-75% helped: kept, and the climb goes on
        (4.0, "down", "cap-75%"),  # cap-50% did not help beyond it
    ]


def test_requests_getting_dearer_lift_the_hold() -> None:
    trace = [(0.25, 0.040)] * 10 + [(0.25, 0.045)] * 2  # 12% dearer than at the step back
    assert judged(trace) == [
        (0.0, "up", "cap-75%"),
        (2.0, "down", "static"),
        (5.0, "up", "cap-75%"),
    ]
    assert judged([(0.25, 0.040)] * 10 + [(0.25, 0.043)] * 2) == judged([(0.25, 0.040)] * 12)


def test_climbs_in_a_row_are_judged_together_after_the_last() -> None:
    # cooldown 1 s: two rungs before the first can be judged; then inside the band
    spec = replace(JUDGING, cooldown=1.0)
    trace = [(0.25, 0.040)] * 3 + [(0.17, 0.040)] * 6
    assert judged(trace, spec) == [
        (0.0, "up", "cap-75%"),
        (1.0, "up", "cap-50%"),
        (3.0, "down", "static"),  # back where the climbs began, in one step
    ]


def test_no_cost_or_lent_cores_are_not_judged() -> None:
    # too few requests to cost them: climbs as without judging
    assert judged([(0.25, None)] * 5) == judged([(0.25, 0.040)] * 5, SPEC)
    # lending a core gives chat more CPUs, not cheaper requests: not judged
    at_cap = LadderState(level=3, changed_at=-10.0)
    assert judged([(0.25, 0.040)] * 13, state=at_cap) == [
        (0.0, "up", "core-1"),
        (2.0, "up", "core-2"),
        (4.0, "up", "freeze-background"),
        (6.0, "down", "core-2"),  # freezing background is judged, from core-2
    ]


def test_a_climb_is_judged_only_on_every_targets_cost_and_waits_for_one() -> None:
    two = replace(JUDGING, targets=(CHAT, Target("rank", slo=0.05, cpus=(6,))), cooldown=1.0)
    slow = Observation({"chat": 0.25, "rank": 0.01}, cost={"chat": 0.040})  # rank: scraped
    state, (d,) = step(LadderState(), slow, two, 0.0)
    assert state.judged_from is None  # chat's cost says nothing about a climb for rank
    # the cost missing when the judgment is due: it waits, then judges
    state, _ = step(LadderState(), Observation({"chat": 0.25}, cost={"chat": 0.040}), JUDGING, 0.0)
    assert state.judged_from == 0
    state, d = step(state, Observation({"chat": 0.17}), JUDGING, 2.0)
    assert d == [] and state.judged_from == 0 and state.level == 1
    state, (d,) = step(state, Observation({"chat": 0.17}, cost={"chat": 0.040}), JUDGING, 2.5)
    assert (d.rung, state.ceiling) == ("static", 0)


def test_max_step_climbs_up_to_a_held_rung_not_past_it() -> None:
    # held at cap-75% (a climb from there did not help); from static, two rungs a step
    spec = replace(JUDGING, max_step=2)
    held = LadderState(
        level=0, changed_at=0.0, ceiling=1, ceiling_until=30.0, ceiling_cost=(("chat", 0.04),)
    )
    _, (d,) = step(held, Observation({"chat": 0.25}, cost={"chat": 0.040}), spec, 5.0)
    assert d.rung == "cap-75%"  # one rung, not two
    unheld = replace(held, ceiling=None)
    assert step(unheld, Observation({"chat": 0.25}), spec, 5.0)[1][0].rung == "cap-50%"


def test_the_hold_is_lifted_against_the_held_rungs_cost_not_the_rung_left() -> None:
    # cap-75% made requests 9.5% cheaper (not enough): back to static, where they cost
    # 10.5% more again; that is the held rung's own cost, not new interference
    trace = [(0.25, 0.040)] * 4 + [(0.25, 0.0362)] * 1 + [(0.25, 0.040)] * 20
    assert judged(trace) == [(0.0, "up", "cap-75%"), (2.0, "down", "static")]


def test_the_laws_defaults_are_the_profiles() -> None:
    """A Spec built without the profile (the law's own tests, benchmarks) behaves as a profile
    that sets nothing: one set of defaults, not two that drift apart."""
    from nxrd.profile.model import ControllerSettings

    spec = Spec((CHAT,), ())
    for name, field in ControllerSettings.model_fields.items():
        if hasattr(spec, name) and name != "period":  # the law's period is cpu.max's
            want = field.default or None if name == "probe_after" else field.default
            assert getattr(spec, name) == want, name


def test_shaped_lower_workloads_get_net_rungs_that_cut_their_egress_ceilings() -> None:
    shaped = replace(
        SPEC,
        lowers=(
            replace(SPEC.lowers[0], egress=200_000_000),  # embed: 200Mbit planned
            SPEC.lowers[1],  # index: not shaped
        ),
    )
    rungs = ladder(shaped)
    assert rungs[3:5] == ["net-50%", "net-25%"]  # after the CPU caps, before lent cores
    assert "net-50%" not in ladder(SPEC)  # nothing shaped: no such rung
    at = {
        level: rung_settings(LadderState(level=level), shaped).egress
        for level in (0, rungs.index("net-50%") + 1, len(rungs))
    }
    assert list(at.values()) == [
        {"embed": 200_000_000},
        {"embed": 100_000_000},
        {"embed": 50_000_000},
    ]


def test_a_queue_waiting_to_be_accepted_climbs_before_the_percentile_shows_it() -> None:
    """chat answers comfortably (its p99 40% of the SLO, and the requests since too), but
    eight requests wait in its accept queue at 25 ms of CPU each on its two cores: the
    ninth would be answered 112 ms from now, 56% of the SLO. Twelve waiting: 162 ms, slack
    19%, under act_below (20%)."""
    calm = Observation({"chat": 0.08}, recent={"chat": 0.08}, service={"chat": 0.025})
    spec = replace(SPEC, act_below=0.2)
    for queued, rung in ((0, None), (8, None), (12, "cap-75%")):
        obs = replace(calm, queued={"chat": float(queued)})
        state, decisions = step(LadderState(), obs, spec, 10.0)
        assert [d.rung for d in decisions] == ([rung] if rung else []), queued
    (up,) = decisions
    assert up.reason == "chat slack 19% under 20% (12 requests waiting to be accepted)"
    assert up.inputs["queued"] == {"chat": 12.0} and up.inputs["slack"] == {"chat": 0.188}
    # while the queue stays, the ladder climbs however good the answered requests look;
    # once it drains, it steps back down as comfort lasts
    moves = []
    for i in range(60):
        queue = 12.0 if i < 20 else 0.0
        state, ds = step(state, replace(calm, queued={"chat": queue}), spec, 10.5 + i / 2)
        moves += [d.direction for d in ds]
    assert "up" in moves[: moves.index("down")] and set(moves[moves.index("down") :]) == {"down"}
    # without its CPU per request (no pushed latency), a queue says nothing
    blind = replace(calm, queued={"chat": 12.0}, service={})
    assert step(LadderState(), blind, spec, 10.0)[1] == []
