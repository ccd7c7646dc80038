"""Restart decisions (pure): should an exited workload run again, and after how long."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from nxrd.profile.model import Restart


@dataclass(frozen=True)
class Exit:
    """How a workload's process ended. cause is one of CAUSES."""

    cause: str
    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        """'exit code 1', 'signal SIGSEGV', 'oom', 'stopped by operator'..."""
        if self.cause == "exit-code":
            return f"exit code {self.code}"
        if self.cause == "signal" and self.signal is not None:
            try:
                return f"signal {signal.Signals(self.signal).name}"
            except ValueError:
                return f"signal {self.signal}"
        return self.cause.replace("-", " ")

    @property
    def clean(self) -> bool:
        """Exited by itself with status 0."""
        return self.cause == "exit-code" and self.code == 0


CAUSES = (
    "exit-code",  # exited by itself; code holds the status
    "signal",  # killed by a signal nxr did not send
    "oom",  # the kernel's OOM killer (memory.events oom_kill rose)
    "killed-for-memory",  # nxr's memory guard, before the kernel's OOM killer had to
    "stopped-by-operator",
    "stopped-by-controller",  # its ladder's last rung (control.stop); started again later
    "not-ready",  # no readiness within ready.timeout
    "spawn-failed",  # could not be started at all (bad program, user, cwd)
    "lost",  # exited while no nxrd watched it; status unknown
)
_NEVER_RESTART = frozenset({"stopped-by-operator"})


@dataclass(frozen=True)
class History:
    """What the decision remembers between exits."""

    failures: int = 0  # consecutive unhealthy exits: the backoff exponent
    restarts: tuple[float, ...] = field(default=())  # times of restarts, for the window


@dataclass(frozen=True)
class RestartDecision:
    action: str  # "restart", "give-up" or "stay-stopped"
    delay: float
    history: History
    reason: str


MIN_DELAY = 0.1
JITTER = 0.2  # +-20%: workloads that failed together do not restart in lockstep


def decide(
    spec: Restart, history: History, exit: Exit, now: float, ran_for: float, jitter: float
) -> RestartDecision:
    """Apply the restart policy to one exit. jitter is a number in [0, 1) from the caller."""
    if (
        exit.cause in _NEVER_RESTART
        or spec.policy == "no"
        or (spec.policy == "on-failure" and exit.clean)
    ):
        return RestartDecision(
            "stay-stopped", 0.0, History(), f"{exit.describe()}; policy {spec.policy}"
        )
    # A run that lasted at least max_delay was healthy: start the backoff over.
    failures = 0 if ran_for >= spec.max_delay else history.failures
    recent = tuple(t for t in history.restarts if t > now - spec.window)
    if len(recent) >= spec.max_restarts:
        return RestartDecision(
            "give-up",
            0.0,
            History(failures, recent),
            f"{exit.describe()}; {len(recent)} restarts within {_span(spec.window)}, "
            f"max_restarts is {spec.max_restarts}",
        )
    base = min(spec.delay * 2**failures, spec.max_delay)
    # Never below MIN_DELAY: a crash loop with delay 0 would otherwise spin a core.
    delay = max(MIN_DELAY, min(base * (1 + JITTER * (2 * jitter - 1)), spec.max_delay))
    return RestartDecision(
        "restart",
        delay,
        History(failures + 1, (*recent, now + delay)),
        f"{exit.describe()}; restart {len(recent) + 1} of {spec.max_restarts} in {delay:.1f}s",
    )


def _span(seconds: float) -> str:
    from nxrd.model.units import format_duration

    return format_duration(seconds)
