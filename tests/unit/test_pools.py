"""Concurrency pools: start order, slot and max_starting limits, and the reasons shown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nxrd.supervisor.pools import Candidate, Holder, PoolSpec, Schedule, schedule


def cand(
    name: str, slots: int = 1, priority: int = 0, since: float = 0.0, pool: str = "gpu"
) -> Candidate:
    return Candidate(name=name, pool=pool, slots=slots, priority=priority, waiting_since=since)


def hold(name: str, slots: int = 1, starting: bool = False, pool: str = "gpu") -> Holder:
    return Holder(name=name, pool=pool, slots=slots, starting=starting)


def pools(*specs: PoolSpec) -> dict[str, PoolSpec]:
    return {s.name: s for s in specs}


GPU1 = pools(PoolSpec("gpu", slots=1))


def test_one_slot_starts_one_at_a_time_by_priority() -> None:
    # Waiting times and names run opposite to priority, so only priority can give this order.
    waiting = [
        cand("a", priority=1, since=1.0),
        cand("b", priority=5, since=3.0),
        cand("c", priority=3, since=2.0),
    ]
    order: list[str] = []
    while waiting:
        first = schedule(GPU1, [], waiting)
        assert len(first.start) == 1
        (name,) = first.start
        order.append(name)
        waiting = [c for c in waiting if c.name != name]
        # While it is starting and then while it runs, nobody else gets in.
        for starting in (True, False):
            held = schedule(GPU1, [hold(name, starting=starting)], waiting)
            assert held.start == ()
            assert set(held.waiting) == {c.name for c in waiting}
    assert order == ["b", "c", "a"]


def test_ties_broken_by_waiting_since_then_name() -> None:
    candidates = [
        cand("z", priority=5, since=2.0),
        cand("y", priority=5, since=1.0),
        cand("x", priority=5, since=2.0),
        cand("w", priority=4, since=0.0),
    ]
    got = schedule(pools(PoolSpec("gpu", slots=3)), [], candidates)
    assert got.start == ("y", "x", "z")
    assert got.waiting == {"w": "waiting for pool gpu: needs 1 slot(s), 0 of 3 free"}


def test_start_order_is_global_across_pools() -> None:
    p = pools(PoolSpec("gpu", slots=1), PoolSpec("cpu", slots=1))
    got = schedule(p, [], [cand("a", priority=1, pool="gpu"), cand("b", priority=9, pool="cpu")])
    assert got == Schedule(start=("b", "a"), waiting={})


def test_max_starting_limits_concurrent_starts() -> None:
    p = pools(PoolSpec("gpu", slots=10, max_starting=2))
    candidates = [cand(n, priority=10 - i) for i, n in enumerate("abcd")]
    got = schedule(p, [], candidates)
    assert got.start == ("a", "b")
    assert got.waiting == {
        "c": "waiting for pool gpu: 2 of 2 starting (max_starting 2)",
        "d": "waiting for pool gpu: behind c (priority 8)",
    }
    # Once one is ready, one more may start; ready holders do not count as starting.
    rest = candidates[2:]
    got = schedule(p, [hold("a", starting=False), hold("b", starting=True)], rest)
    assert got.start == ("c",)
    assert got.waiting == {"d": "waiting for pool gpu: 2 of 2 starting (max_starting 2)"}


def test_no_max_starting_means_only_slots_limit() -> None:
    p = pools(PoolSpec("gpu", slots=3))
    got = schedule(p, [hold("h", starting=True)], [cand("a"), cand("b"), cand("c")])
    assert got.start == ("a", "b")


def test_no_backfill_behind_a_big_job() -> None:
    p = pools(PoolSpec("gpu", slots=4))
    candidates = [cand("big", slots=4, priority=9), cand("small", slots=1, priority=1)]
    got = schedule(p, [hold("h", slots=2)], candidates)
    assert got.start == ()
    assert got.waiting == {
        "big": "waiting for pool gpu: needs 4 slot(s), 2 of 4 free (held by h)",
        "small": "waiting for pool gpu: behind big (priority 9)",
    }


def test_big_job_blocks_only_its_own_pool() -> None:
    p = pools(PoolSpec("gpu", slots=2), PoolSpec("cpu", slots=1))
    candidates = [cand("big", slots=2, priority=9), cand("other", pool="cpu")]
    got = schedule(p, [hold("h")], candidates)
    assert got.start == ("other",)
    assert set(got.waiting) == {"big"}


def test_lower_priority_starts_when_it_is_first_that_fits() -> None:
    # Order is strict, but a big job that comes later in the order does not block earlier ones.
    p = pools(PoolSpec("gpu", slots=2))
    got = schedule(p, [], [cand("small", priority=9), cand("big", slots=2, priority=1)])
    assert got.start == ("small",)
    assert got.waiting == {"big": "waiting for pool gpu: needs 2 slot(s), 1 of 2 free"}


def test_unknown_pool() -> None:
    got = schedule(GPU1, [], [cand("a", pool="tpu"), cand("b")])
    assert got == Schedule(start=("b",), waiting={"a": "pool tpu does not exist"})


def test_oversized_request_never_starts_and_does_not_block() -> None:
    p = pools(PoolSpec("gpu", slots=2))
    got = schedule(p, [], [cand("huge", slots=3, priority=9), cand("ok", slots=2)])
    assert got.start == ("ok",)
    assert got.waiting == {"huge": "needs 3 slots; pool gpu has only 2"}


def test_slots_reason_lists_only_this_pools_holders_sorted() -> None:
    p = pools(PoolSpec("gpu", slots=3), PoolSpec("cpu", slots=5))
    holders = [hold("zeta"), hold("alpha", starting=True), hold("cpujob", pool="cpu")]
    got = schedule(p, holders, [cand("a", slots=2)])
    assert got.waiting == {
        "a": "waiting for pool gpu: needs 2 slot(s), 1 of 3 free (held by alpha, zeta)"
    }


def test_slots_reason_omits_parenthesis_without_holders() -> None:
    # The slots taken by a job started in this same pass leave none for the next one; no
    # workload holds slots yet, so none is named. Holders of another pool are not named either.
    p = pools(PoolSpec("gpu", slots=2), PoolSpec("cpu", slots=2))
    holders = [hold("x", slots=2, pool="cpu")]
    got = schedule(p, holders, [cand("first", slots=2, priority=5), cand("second", slots=1)])
    assert got.start == ("first",)
    assert got.waiting == {"second": "waiting for pool gpu: needs 1 slot(s), 0 of 2 free"}


def test_max_starting_reason_counts_current_starts() -> None:
    p = pools(PoolSpec("gpu", slots=5, max_starting=1))
    got = schedule(p, [hold("h", starting=True)], [cand("a")])
    assert got.waiting == {"a": "waiting for pool gpu: 1 of 1 starting (max_starting 1)"}
    p = pools(PoolSpec("gpu", slots=1, max_starting=0))
    got = schedule(p, [], [cand("a")])
    assert got.waiting == {"a": "waiting for pool gpu: 0 of 0 starting (max_starting 0)"}


def test_slots_shortage_reported_before_max_starting() -> None:
    p = pools(PoolSpec("gpu", slots=2, max_starting=1))
    got = schedule(p, [hold("h", starting=True)], [cand("a", slots=2)])
    assert got.waiting == {"a": "waiting for pool gpu: needs 2 slot(s), 1 of 2 free (held by h)"}


def test_behind_names_the_first_blocked_candidate() -> None:
    p = pools(PoolSpec("gpu", slots=1))
    candidates = [cand("a", priority=7, slots=1), cand("b", priority=5), cand("c", priority=3)]
    got = schedule(p, [hold("h")], candidates)
    assert got.waiting == {
        "a": "waiting for pool gpu: needs 1 slot(s), 0 of 1 free (held by h)",
        "b": "waiting for pool gpu: behind a (priority 7)",
        "c": "waiting for pool gpu: behind a (priority 7)",
    }


def test_duplicate_candidate_names_rejected() -> None:
    with pytest.raises(ValueError):
        schedule(GPU1, [], [cand("a"), cand("a")])


# --- property test --------------------------------------------------------------------------

POOL_NAMES = ["p0", "p1", "p2"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, PoolSpec], list[Holder], list[Candidate]]:
    specs: dict[str, PoolSpec] = {}
    # p2 may be left out, so candidates of a missing pool are exercised too.
    for name in draw(st.sampled_from([POOL_NAMES[:2], POOL_NAMES])):
        slots = draw(st.integers(0, 6))
        max_starting = draw(st.none() | st.integers(0, 3))
        specs[name] = PoolSpec(name, slots, max_starting)
    holders: list[Holder] = []
    for i in range(draw(st.integers(0, 5))):
        pool = draw(st.sampled_from(POOL_NAMES[:2]))
        # Holders never exceed their pool, as the supervisor itself only starts what fits.
        room = specs[pool].slots - sum(h.slots for h in holders if h.pool == pool)
        if room < 1:
            continue
        holders.append(Holder(f"h{i}", pool, draw(st.integers(1, room)), draw(st.booleans())))
    candidates = [
        Candidate(
            f"c{i}",
            draw(st.sampled_from(POOL_NAMES)),
            draw(st.integers(1, 7)),
            draw(st.integers(0, 3)),
            draw(st.floats(0, 5, allow_nan=False)),
        )
        for i in range(draw(st.integers(0, 8)))
    ]
    return specs, holders, candidates


@settings(max_examples=400)
@given(scenarios())
def test_property_limits_and_prefix(
    scenario: tuple[dict[str, PoolSpec], list[Holder], list[Candidate]],
) -> None:
    specs, holders, candidates = scenario
    got = schedule(specs, holders, candidates)
    by_name = {c.name: c for c in candidates}
    started = set(got.start)
    assert len(started) == len(got.start)
    assert started.isdisjoint(got.waiting)
    assert started | set(got.waiting) == set(by_name)
    for name in started:
        assert by_name[name].pool in specs
    for pool, spec in specs.items():
        pool_started = [by_name[n] for n in got.start if by_name[n].pool == pool]
        used = sum(h.slots for h in holders if h.pool == pool) + sum(c.slots for c in pool_started)
        assert used <= spec.slots
        if spec.max_starting is not None and pool_started:
            now_starting = sum(1 for h in holders if h.pool == pool and h.starting)
            assert now_starting + len(pool_started) <= spec.max_starting
        # Only candidates that could ever fit take part in the strict order.
        order = sorted(
            (c for c in candidates if c.pool == pool and c.slots <= spec.slots),
            key=lambda c: (-c.priority, c.waiting_since, c.name),
        )
        flags = [c.name in started for c in order]
        assert flags == sorted(flags, reverse=True), "started set is not a prefix of the order"
