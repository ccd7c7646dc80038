"""Concurrency pools: which waiting workloads may start now, and why the rest wait.

Pure: no file, process or clock access; times are passed in as floats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolSpec:
    """A pool as declared in a profile: `[pools.NAME] slots = N, max_starting = M`."""

    name: str
    slots: int
    max_starting: int | None = None  # None: no limit beyond slots


@dataclass(frozen=True)
class Holder:
    """A workload that currently holds slots in a pool (starting, ready or running)."""

    name: str
    pool: str
    slots: int
    starting: bool  # launched but not ready yet


@dataclass(frozen=True)
class Candidate:
    """A workload waiting to start in a pool."""

    name: str
    pool: str
    slots: int
    priority: int
    waiting_since: float


@dataclass(frozen=True)
class Schedule:
    """The result of one scheduling pass: what to start now, and why the rest wait."""

    start: tuple[str, ...]  # names to start now, in start order
    waiting: dict[str, str]  # every candidate not started -> one-line reason


def _order_key(candidate: Candidate) -> tuple[int, float, str]:
    """Sort key for candidates: higher priority, then longer waiting, then name."""
    return (-candidate.priority, candidate.waiting_since, candidate.name)


def _slots_reason(candidate: Candidate, spec: PoolSpec, free: int, holder_names: list[str]) -> str:
    # A pool shrunk below what its holders use would show a negative count; 0 reads truer.
    text = (
        f"waiting for pool {candidate.pool}: needs {candidate.slots} slot(s), "
        f"{max(free, 0)} of {spec.slots} free"
    )
    if holder_names:
        text += f" (held by {', '.join(sorted(holder_names))})"
    return text


def _schedule_pool(
    spec: PoolSpec,
    holders: Sequence[Holder],
    candidates: Sequence[Candidate],
    start: list[Candidate],
    waiting: dict[str, str],
) -> None:
    free = spec.slots - sum(h.slots for h in holders)
    starting = sum(1 for h in holders if h.starting)
    # Only current holders are named: ones started in this pass are launched by the caller
    # afterwards and show up as holders on the next pass.
    holder_names = [h.name for h in holders]
    blocker: Candidate | None = None
    for cand in sorted(candidates, key=_order_key):
        if cand.slots > spec.slots:
            # It can never start; letting it block the order would stall the pool for good.
            waiting[cand.name] = f"needs {cand.slots} slots; pool {cand.pool} has only {spec.slots}"
        elif blocker is not None:
            # Strict order, no backfill: small jobs must not starve the big one ahead of them.
            waiting[cand.name] = (
                f"waiting for pool {cand.pool}: behind {blocker.name} (priority {blocker.priority})"
            )
        elif cand.slots > free:
            # Checked before max_starting: slots are the lasting shortage, starts end soon.
            waiting[cand.name] = _slots_reason(cand, spec, free, holder_names)
            blocker = cand
        elif spec.max_starting is not None and starting >= spec.max_starting:
            waiting[cand.name] = (
                f"waiting for pool {cand.pool}: {starting} of {spec.max_starting} starting "
                f"(max_starting {spec.max_starting})"
            )
            blocker = cand
        else:
            start.append(cand)
            free -= cand.slots
            starting += 1


def schedule(
    pools: Mapping[str, PoolSpec],
    holders: Sequence[Holder],
    candidates: Sequence[Candidate],
) -> Schedule:
    """Decide which candidates start now under their pools' slot and max_starting limits."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError("candidate names must be unique")
    holders_by_pool: dict[str, list[Holder]] = {}
    for holder in holders:
        holders_by_pool.setdefault(holder.pool, []).append(holder)
    candidates_by_pool: dict[str, list[Candidate]] = {}
    for cand in candidates:
        candidates_by_pool.setdefault(cand.pool, []).append(cand)

    start: list[Candidate] = []
    reasons: dict[str, str] = {}
    for pool_name, pool_candidates in candidates_by_pool.items():
        spec = pools.get(pool_name)
        if spec is None:
            for cand in pool_candidates:
                reasons[cand.name] = f"pool {pool_name} does not exist"
            continue
        _schedule_pool(spec, holders_by_pool.get(pool_name, []), pool_candidates, start, reasons)

    # Pools are independent, so one global order gives a stable, fair start sequence.
    start.sort(key=_order_key)
    waiting = {
        c.name: reasons[c.name] for c in sorted(candidates, key=_order_key) if c.name in reasons
    }
    return Schedule(start=tuple(c.name for c in start), waiting=waiting)
