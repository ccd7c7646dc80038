"""GPU memory budgets: when a workload over its gpu_memory is told about, restarted or stopped."""

from __future__ import annotations

from nxrd.supervisor.gpu_budget import Action, Budget, Watch, judge

GIB = 1 << 30


def run(budget: Budget, polls: list[dict[int, int | None]], grace: int = 3) -> list[list[Action]]:
    known: dict[str, Watch] = {}
    out = []
    for i, use in enumerate(polls):
        known, actions = judge(known, {"llm": use}, {"llm": budget}, float(i), grace)
        out.append(actions)
    return out


def test_within_budget_nothing_is_said() -> None:
    assert run(Budget(8 * GIB, "stop"), [{0: 8 * GIB}, {0: None}, {}]) == [[], [], []]


def test_warn_says_over_once_and_back_under_once() -> None:
    got = run(Budget(8 * GIB), [{0: 9 * GIB}, {0: 10 * GIB}, {0: 10 * GIB}, {0: 7 * GIB}])
    assert got == [
        [Action("llm", "over", "GPU memory 9G on GPU 0, over its 8G (policy warn)")],
        [],
        [],
        [Action("llm", "under", "GPU memory back within 8G")],
    ]


def test_restart_waits_for_the_grace_polls_and_a_brief_overshoot_is_only_said() -> None:
    big, ok = {0: 4 * GIB, 1: 9 * GIB}, {0: 4 * GIB, 1: 1 * GIB}
    brief = run(Budget(8 * GIB, "restart"), [big, big, ok])
    assert [[a.kind for a in p] for p in brief] == [["over"], [], ["under"]]
    held = run(Budget(8 * GIB, "restart"), [big, big, big])
    assert held[2] == [Action("llm", "restart", "GPU memory 9G on GPU 1, over its 8G")]


def test_stop_policy_stops_after_the_grace() -> None:
    got = run(Budget(8 * GIB, "stop"), [{0: 9 * GIB}] * 2, grace=2)
    assert got[1] == [Action("llm", "stop", "GPU memory 9G on GPU 0, over its 8G")]


def test_restarts_past_the_limit_become_a_stop() -> None:
    budget = Budget(8 * GIB, "restart", max_restarts=2, window=60.0)
    kinds = [[a.kind for a in p] for p in run(budget, [{0: 9 * GIB}] * 3, grace=1)]
    assert kinds == [["over", "restart"], ["over", "restart"], ["over", "stop"]]
    # outside the window the count starts again
    known = {"llm": Watch(restarts=(0.0, 1.0))}
    _, actions = judge(known, {"llm": {0: 9 * GIB}}, {"llm": budget}, 100.0, grace=1)
    assert [a.kind for a in actions] == ["over", "restart"]
