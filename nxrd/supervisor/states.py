"""Workload states and the only transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum

from nxrd.errors import NxrError


class State(StrEnum):
    """Where a workload is in its life; the value is what users see."""

    PENDING = "pending"  # wants to run; waiting for `after` dependencies
    WAITING_FOR_POOL = "waiting-for-pool"
    STARTING = "starting"  # launched, readiness not yet confirmed
    READY = "ready"
    EXITED = "exited"  # its process ended; a restart decision follows at once
    BACKOFF = "backoff"  # waiting out a restart delay
    FAILED = "failed"  # gave up restarting; an operator must start it again
    STOPPING = "stopping"
    STOPPED = "stopped"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    # PENDING -> STARTING when its dependencies are ready and it needs no pool slot
    S.PENDING: frozenset({S.STARTING, S.WAITING_FOR_POOL, S.STOPPED}),
    # a dependency stopped again: back to PENDING
    S.WAITING_FOR_POOL: frozenset({S.STARTING, S.PENDING, S.STOPPED}),
    # not ready within ready.timeout -> STOPPING; died while starting -> EXITED
    S.STARTING: frozenset({S.READY, S.EXITED, S.STOPPING}),
    S.READY: frozenset({S.EXITED, S.STOPPING}),
    # the restart policy decides: delay, give up, or leave it stopped
    S.EXITED: frozenset({S.BACKOFF, S.FAILED, S.STOPPED}),
    S.BACKOFF: frozenset({S.PENDING, S.STOPPED}),
    # an operator starts a failed or stopped workload again
    S.FAILED: frozenset({S.PENDING, S.STOPPED}),
    # STOPPING -> EXITED only when nxr stopped a start that never became ready:
    # that counts as a failed start, and the restart policy decides what follows
    S.STOPPING: frozenset({S.STOPPED, S.EXITED}),
    S.STOPPED: frozenset({S.PENDING}),
}

ACTIVE = frozenset({S.STARTING, S.READY, S.STOPPING})  # a process may be running


class IllegalTransition(NxrError):
    """A state change the table does not allow: a bug in the supervisor, never user input."""


def check_transition(old: State, new: State) -> None:
    """Raise IllegalTransition unless old -> new is in the table."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal workload transition {old.value} -> {new.value}")
