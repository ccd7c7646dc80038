"""The workload state machine and restart decisions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nxrd.profile.model import Restart
from nxrd.supervisor.restart import Exit, History, decide
from nxrd.supervisor.states import TRANSITIONS, IllegalTransition, State, check_transition


def test_every_state_has_a_row_and_the_user_visible_names() -> None:
    assert set(TRANSITIONS) == set(State)
    assert [s.value for s in State] == [
        "pending",
        "waiting-for-pool",
        "starting",
        "ready",
        "exited",
        "backoff",
        "failed",
        "stopping",
        "stopped",
    ]


def test_a_normal_life_is_allowed() -> None:
    life = [
        State.PENDING,
        State.WAITING_FOR_POOL,
        State.STARTING,
        State.READY,
        State.EXITED,
        State.BACKOFF,
        State.PENDING,
        State.STARTING,
        State.READY,
        State.STOPPING,
        State.STOPPED,
        State.PENDING,
    ]
    for old, new in itertools.pairwise(life):
        check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (State.STOPPED, State.READY),
        (State.FAILED, State.STARTING),
        (State.READY, State.BACKOFF),
        (State.STOPPING, State.READY),
        (State.PENDING, State.READY),
        (State.EXITED, State.READY),
    ],
)
def test_illegal_transitions_raise(old: State, new: State) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)


def test_failed_and_stopped_only_leave_by_a_new_start() -> None:
    assert TRANSITIONS[State.FAILED] == {State.PENDING, State.STOPPED}
    assert TRANSITIONS[State.STOPPED] == {State.PENDING}


SPEC = Restart(policy="on-failure", delay=1.0, max_delay=8.0, max_restarts=4, window=60.0)


def test_policies() -> None:
    fail, clean = Exit("exit-code", code=1), Exit("exit-code", code=0)
    assert decide(SPEC, History(), clean, 0, 1, 0.5).action == "stay-stopped"
    assert decide(SPEC, History(), fail, 0, 1, 0.5).action == "restart"
    assert decide(SPEC, History(), Exit("oom"), 0, 1, 0.5).action == "restart"
    always = SPEC.model_copy(update={"policy": "always"})
    assert decide(always, History(), clean, 0, 1, 0.5).action == "restart"
    never = SPEC.model_copy(update={"policy": "no"})
    assert decide(never, History(), fail, 0, 1, 0.5).action == "stay-stopped"
    by_operator = Exit("stopped-by-operator")
    assert decide(always, History(), by_operator, 0, 1, 0.5).action == "stay-stopped"


def test_a_crash_loop_backs_off_doubling_then_gives_up() -> None:
    history, now, delays = History(), 0.0, []
    for _ in range(10):
        d = decide(SPEC, history, Exit("exit-code", code=1), now, ran_for=0.1, jitter=0.5)
        if d.action == "give-up":
            break
        delays.append(d.delay)
        history, now = d.history, now + d.delay + 0.1
    assert delays == [1.0, 2.0, 4.0, 8.0]  # doubling, capped at max_delay
    assert d.action == "give-up"
    assert d.reason == "exit code 1; 4 restarts within 1m, max_restarts is 4"


def test_a_healthy_run_resets_the_backoff_and_the_window_forgets() -> None:
    d = decide(
        SPEC,
        History(failures=3, restarts=(1.0, 2.0, 3.0)),
        Exit("oom"),
        100.0,
        ran_for=30.0,
        jitter=0.5,
    )
    assert d.action == "restart" and d.delay == 1.0  # ran 30s >= max_delay: healthy
    d = decide(
        SPEC,
        History(failures=0, restarts=(1.0, 2.0, 3.0, 4.0)),
        Exit("oom"),
        100.0,
        ran_for=1.0,
        jitter=0.5,
    )
    assert d.action == "restart"  # the 4 restarts are older than the 60s window


@given(st.floats(0, 0.999), st.integers(0, 20))
def test_jitter_stays_within_20_percent_and_max_delay(jitter: float, failures: int) -> None:
    d = decide(SPEC, History(failures=failures), Exit("signal", signal=11), 0, 0, jitter)
    base = min(2.0**failures, 8.0)
    assert base * 0.8 - 1e-9 <= d.delay <= min(base * 1.2, 8.0) + 1e-9


def test_exit_descriptions() -> None:
    assert Exit("signal", signal=9).describe() == "signal SIGKILL"
    assert Exit("exit-code", code=3).describe() == "exit code 3"
    assert Exit("stopped-by-operator").describe() == "stopped by operator"
