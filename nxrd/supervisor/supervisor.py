"""The supervisor: workload records, their state transitions and the actions each one takes.

Driven by tick(now) with an injected clock and a Runtime for every kernel operation,
so its whole behaviour is unit-tested with a fake runtime and a fake clock.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from nxrd.errors import NxrError
from nxrd.kernel.runtime import Ended, Runtime
from nxrd.model.plan import Plan, WorkloadPlan
from nxrd.plan.diff import launch_key
from nxrd.profile.model import Profile, Workload
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.pools import Candidate, Holder, PoolSpec, schedule
from nxrd.supervisor.restart import Exit, History, decide
from nxrd.supervisor.states import State, check_transition


class NotRunning(NxrError):
    """An operation that needs a running workload was asked of one that is not."""


@dataclass
class Record:
    """Everything the supervisor knows about one workload."""

    name: str
    plan: WorkloadPlan
    spec: Workload
    state: State = State.PENDING
    reason: str = "declared in the profile"
    pid: int | None = None
    shim_pid: int | None = None
    started_at: float | None = None
    waiting_since: float = 0.0
    history: History = field(default_factory=History)
    restarts: int = 0
    backoff_until: float | None = None
    stop_deadline: float | None = None
    stop_cause: str | None = None  # set when nxr itself stops it
    held: bool = False  # stopped by a policy: stays stopped across nxrd's restarts
    next_probe: float = 0.0
    oom_before: int = 0
    killed_for: str | None = None  # why nxr's memory guard killed it, until its exit is seen
    last_exit: str | None = None
    start_after_stop: bool = False  # a restart: start again once stopped
    frozen: bool = False
    frozen_by: str | None = None  # "operator" or "controller": who lifts it
    launch_key: str = ""  # fingerprint of what a restart would change
    # A changed profile's plan and spec, taken over once the running process has stopped.
    pending: tuple[WorkloadPlan, Workload] | None = None
    retiring: bool = False  # gone from the profile: removed once stopped


class Supervisor:
    def __init__(
        self,
        profile: Profile,
        plan: Plan,
        runtime: Runtime,
        events: EventLog,
        wall: Callable[[], float],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.profile, self.runtime, self.events = profile, runtime, events
        self.wall, self.jitter = wall, jitter
        self.records: dict[str, Record] = {}
        self.rolling: list[str] = []  # a rolling restart: the ones still to restart, in order
        self._take(profile, plan)

    def _take(self, profile: Profile, plan: Plan) -> None:
        """Records for a profile's workloads (existing ones kept), dependencies first."""
        plans = {wl.name: wl for wl in plan.workloads}
        old, self.records = self.records, {}
        for name in _dependency_order(profile):
            spec = profile.workloads[name]
            kept = old.pop(name, None)
            self.records[name] = kept or Record(
                name, plans[name], spec, launch_key=launch_key(plans[name], spec)
            )
        self.records.update(old)  # retiring ones, until they have stopped
        self.profile = profile
        self.pools = {n: PoolSpec(n, p.slots, p.max_starting) for n, p in profile.pools.items()}

    def reconfigure(self, profile: Profile, plan: Plan, now: float, cause: str) -> None:
        """Switch to a changed profile whose cgroup values are already written.

        Unchanged launches carry on with the new values; changed ones restart (stopped with
        the old plan, started with the new); removed workloads stop and then disappear.
        """
        plans = {wl.name: wl for wl in plan.workloads}
        for name, rec in list(self.records.items()):
            if name not in plans:
                if not rec.retiring:
                    rec.retiring = True
                    self.stop(name, now, cause="removed-from-profile")
                continue
            new_plan, spec = plans[name], profile.workloads[name]
            key = launch_key(new_plan, spec)
            running = rec.state in (State.STARTING, State.READY, State.STOPPING)
            if rec.retiring:  # declared again before it had stopped
                rec.retiring, rec.pending, rec.start_after_stop = False, (new_plan, spec), True
            elif running and (key != rec.launch_key or new_plan.cgroup != rec.plan.cgroup):
                rec.pending = (new_plan, spec)
                if rec.state != State.STOPPING:  # a stop under way stays a stop
                    self.restart(name, now, cause=f"profile-changed ({cause})")
            else:
                rec.plan, rec.spec, rec.launch_key = new_plan, spec, key
        self._take(profile, plan)

    # -- transitions -------------------------------------------------------------------

    def _move(self, rec: Record, new: State, cause: str) -> None:
        check_transition(rec.state, new)
        old, rec.state, rec.reason = rec.state, new, cause
        self.events.record(self.wall(), rec.name, old.value, new.value, cause)

    # -- operator actions --------------------------------------------------------------

    def start(self, name: str, now: float) -> None:
        """Start a stopped or failed workload again (an operator's request)."""
        rec = self.records[name]
        if rec.state == State.STOPPING:
            rec.start_after_stop = True
        if rec.state in (State.STOPPED, State.FAILED):
            rec.history, rec.waiting_since = History(), now
            self._move(rec, State.PENDING, "started by operator")
            rec.stop_cause = rec.stop_deadline = None
            rec.held = False

    def stop(
        self, name: str, now: float, cause: str = "stopped-by-operator", hold: bool = False
    ) -> None:
        """Stop a workload: stop.signal, then after stop.timeout kill its whole cgroup.

        hold: a policy's stop (not an operator's) that a restarted nxrd keeps, as it keeps
        an operator's, until an operator starts the workload."""
        rec = self.records[name]
        rec.stop_cause, rec.held = cause, hold
        rec.start_after_stop = False  # a stop wins over a restart or start still pending
        if rec.state in (State.STARTING, State.READY):
            if rec.frozen:  # a frozen process cannot act on its stop signal
                self._quietly(lambda: self._set_frozen(rec, False, "thawed to stop"))
            self._move(rec, State.STOPPING, cause.replace("-", " "))
            if rec.pid is not None:
                sig = signal.Signals[rec.spec.stop.signal]
                self._quietly(lambda: self.runtime.signal(rec.pid or 0, sig))
            rec.stop_deadline = now + rec.spec.stop.timeout
        elif rec.state in (
            State.PENDING,
            State.WAITING_FOR_POOL,
            State.BACKOFF,
            State.FAILED,
            State.EXITED,
        ):
            self._move(rec, State.STOPPED, cause.replace("-", " "))

    def freeze(
        self, name: str, now: float, cause: str = "frozen by operator", by: str = "operator"
    ) -> None:
        """Freeze a ready workload: its processes stop running until thawed.

        by: who froze it, kept across nxrd's restarts: the controller lifts its own freezes
        when it steps down, an operator's stay until an operator thaws them."""
        self._set_frozen(self.records[name], True, cause, by)

    def thaw(self, name: str, now: float, cause: str = "thawed by operator") -> None:
        self._set_frozen(self.records[name], False, cause)

    def _set_frozen(self, rec: Record, frozen: bool, cause: str, by: str = "operator") -> None:
        if frozen and rec.state != State.READY:
            raise NotRunning(
                f"{rec.name} is {rec.state.value}; only a ready workload can be frozen"
            )
        if rec.frozen == frozen:
            return
        self.runtime.freeze(rec.plan, frozen)
        rec.frozen, rec.frozen_by = frozen, by if frozen else None
        # Not a state change: the event keeps the state and says what happened.
        self.events.record(self.wall(), rec.name, rec.state.value, rec.state.value, cause)

    def restart(self, name: str, now: float, cause: str = "restarted-by-operator") -> None:
        """Stop the workload if it runs, then start it again."""
        rec = self.records[name]
        if rec.state in (State.STARTING, State.READY, State.STOPPING):
            if rec.state != State.STOPPING:
                self.stop(name, now, cause)
            rec.start_after_stop = True
        else:
            if rec.state not in (State.STOPPED, State.FAILED):
                self.stop(name, now, cause)
            self.start(name, now)

    def roll(self, names: list[str], now: float) -> None:
        """Restart these one at a time, each once the one before is ready again: a
        replicated workload restarted this way keeps serving throughout."""
        self.rolling = [n for n in names if n in self.records]
        if self.rolling:
            self.restart(self.rolling[0], now)

    def _roll_on(self, now: float) -> None:
        rec = self.records.get(self.rolling[0])
        if rec is not None and rec.state not in (State.READY, State.FAILED, State.STOPPED):
            return  # still on its way back
        done = self.rolling.pop(0)
        if rec is None or rec.state != State.READY:
            left, self.rolling = self.rolling, []
            if left:
                why = f"rolling restart stopped: {done} did not come back ready"
                self.events.record(self.wall(), "-", "-", "-", f"{why}; not restarted: {left}")
        elif self.rolling:
            self.restart(self.rolling[0], now)

    def adopt(
        self,
        name: str,
        pid: int,
        shim_pid: int,
        started_at: float,
        now: float,
        was: str,
        frozen_by: str | None = None,
    ) -> None:
        """Take over a workload a previous nxrd started: same process, no restart.

        was: its state under that nxrd. A start still being checked for readiness goes on
        being checked; a stop in progress is carried on. frozen_by: its leaf is frozen, by
        whom (the kernel keeps a freeze across nxrd's restarts; so must nxrd, or a thaw
        would find nothing to do).
        """
        rec = self.records[name]
        rec.pid, rec.shim_pid, rec.started_at = pid, shim_pid, started_at
        rec.oom_before = self.runtime.oom_kills(rec.plan)
        rec.next_probe = now
        self._move(rec, State.STARTING, f"adopted from the previous nxrd; pid {pid}")
        if frozen_by is not None:
            rec.frozen, rec.frozen_by = True, frozen_by
        if was != State.STARTING.value:
            self._move(rec, State.READY, "was running under the previous nxrd")
        if frozen_by is not None:
            lifts = "an operator's thaw" if frozen_by == "operator" else "the controller"
            why = f"still frozen from before nxrd restarted, until {lifts} lifts it"
            self.events.record(self.wall(), name, rec.state.value, rec.state.value, why)
        if was == State.STOPPING.value:
            self.stop(name, now)

    def launch_key(self, name: str) -> str:
        """Fingerprint of what a restart would change: command, environment, user, directory."""
        return self.records[name].launch_key

    def snapshot(self) -> dict[str, dict[str, object]]:
        """What the next nxrd needs to adopt the running workloads."""
        return {
            r.name: {
                "state": r.state.value,
                "pid": r.pid,
                "shim_pid": r.shim_pid,
                "started_at": r.started_at,
                "cgroup": r.plan.cgroup,
                "restarts": r.restarts,
                "launch": r.launch_key,
                "reason": r.reason,
                "stop_cause": r.stop_cause,
                "held": r.held,
                "frozen_by": r.frozen_by,
            }
            for r in self.records.values()
        }

    def stop_all(self, now: float) -> None:
        """Stop everything because nxrd is exiting (the next nxrd starts them again). Those
        already stopped or failed keep their cause: the next nxrd keeps an operator's stop,
        a held stop and a failure."""
        for name, rec in self.records.items():
            if rec.state not in (State.STOPPED, State.FAILED):
                self.stop(name, now, cause="nxrd-exiting")

    def restore(
        self, name: str, state: str, reason: str, stop_cause: str | None, held: bool = False
    ) -> bool:
        """Keep a workload failed, stopped by an operator or held stopped by a policy across
        nxrd's own restarts.

        This sets the initial state (no transition): only an operator's start ends it.
        """
        rec = self.records[name]
        if state == State.FAILED.value:
            restored = State.FAILED
        elif state == State.STOPPED.value and (stop_cause == "stopped-by-operator" or held):
            restored = State.STOPPED
            rec.stop_cause, rec.held = stop_cause, held
        else:
            return False
        rec.state, rec.reason = restored, reason
        self.events.record(self.wall(), name, "-", restored.value, f"kept from before: {reason}")
        return True

    def all_stopped(self) -> bool:
        return all(r.state in (State.STOPPED, State.FAILED) for r in self.records.values())

    # -- the loop's step ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance every workload as far as it can go at time now."""
        self.runtime.reap()
        for rec in self.records.values():
            self._watch(rec, now)
        for rec in [r for r in self.records.values() if r.retiring]:
            if rec.state in (State.STOPPED, State.FAILED):
                self._quietly(lambda: self.runtime.remove_cgroup(rec.plan))  # noqa: B023
                del self.records[rec.name]
        for rec in self.records.values():
            if rec.state == State.BACKOFF and now >= (rec.backoff_until or 0):
                rec.waiting_since = now
                self._move(rec, State.PENDING, "restart delay over")
            if rec.state == State.WAITING_FOR_POOL and not self._deps_ready(rec):
                self._move(rec, State.PENDING, rec.reason)
            elif rec.state == State.WAITING_FOR_POOL and rec.spec.pool not in self.pools:
                self._move(rec, State.PENDING, "no longer in a pool")
            if rec.state == State.PENDING and self._deps_ready(rec):
                if rec.spec.pool is None:
                    self._launch(rec, now)
                else:
                    self._move(rec, State.WAITING_FOR_POOL, f"waiting for pool {rec.spec.pool}")
        self._schedule_pools(now)
        for rec in self.records.values():
            if rec.state == State.STARTING:
                self._probe(rec, now)
        if self.rolling:
            self._roll_on(now)

    def next_wakeup(self, now: float) -> float:
        """Seconds until a timer of some workload is due (backoff, stop timeout, probe)."""
        due = [now + 1.0]
        for rec in self.records.values():
            if rec.state == State.BACKOFF and rec.backoff_until is not None:
                due.append(rec.backoff_until)
            if rec.state == State.STOPPING and rec.stop_deadline is not None:
                # Past the deadline the kernel is emptying the cgroup: look again soon, no spin.
                due.append(max(rec.stop_deadline, now + 0.05))
            if rec.state == State.STARTING:
                due.append(rec.next_probe)
        return max(0.0, min(due) - now)

    # -- internals ---------------------------------------------------------------------

    def _deps_ready(self, rec: Record) -> bool:
        waiting = [d for d in rec.spec.after if self.records[d].state != State.READY]
        if waiting:
            rec.reason = "waiting for " + ", ".join(waiting) + " to be ready"
        return not waiting

    def _schedule_pools(self, now: float) -> None:
        slots = {n: r.spec.pool_slots or 1 for n, r in self.records.items()}
        holders = [
            Holder(r.name, r.spec.pool, slots[r.name], r.state == State.STARTING)
            for r in self.records.values()
            if r.spec.pool in self.pools
            and r.state in (State.STARTING, State.READY, State.STOPPING)
        ]
        candidates = [
            Candidate(r.name, r.spec.pool, slots[r.name], r.spec.priority, r.waiting_since)
            for r in self.records.values()
            if r.spec.pool in self.pools and r.state == State.WAITING_FOR_POOL
        ]
        if not candidates:
            return
        result = schedule(self.pools, holders, candidates)
        for name, why in result.waiting.items():
            self.records[name].reason = why
        for name in result.start:
            self._launch(
                self.records[name], now, cause=f"slot free in pool {self.records[name].spec.pool}"
            )

    def _leftovers(self, rec: Record) -> bool:
        """Kill what an earlier run left in the cgroup; True while any of it remains.

        The old run counts as running until its cgroup is empty (cgroup.events), so a new
        run never overlaps a dying one. cgroup.kill takes effect asynchronously.
        """
        try:
            if not self.runtime.populated(rec.plan):
                return False
            self.runtime.kill_all(rec.plan)
            return self.runtime.populated(rec.plan)
        except NxrError:
            return False  # no cgroup yet: nothing left over

    def _launch(self, rec: Record, now: float, cause: str = "dependencies ready") -> None:
        if self._leftovers(rec):
            rec.reason = "waiting for the previous run's processes to exit"
            return  # still PENDING or WAITING_FOR_POOL; the next tick tries again
        rec.started_at = now  # also for a failed spawn: its run lasted nothing
        try:
            self.runtime.ensure_cgroup(rec.plan)
            rec.oom_before = self.runtime.oom_kills(rec.plan)
            started = self.runtime.launch(rec.plan, rec.spec)
        except NxrError as e:
            self._move(rec, State.STARTING, cause)
            rec.pid = rec.shim_pid = None
            self._exited(rec, Exit("spawn-failed"), now, str(e))
            return
        rec.pid, rec.shim_pid = started.pid, started.shim_pid
        rec.stop_cause, rec.held, rec.next_probe = None, False, now
        rec.killed_for = None
        self._move(rec, State.STARTING, f"{cause}; pid {started.pid}")
        self._probe(rec, now)

    def _probe(self, rec: Record, now: float) -> None:
        if now < rec.next_probe:
            return
        ready = rec.spec.ready
        answer = self.runtime.ready(rec.plan, rec.pid or 0, rec.spec)
        if answer:
            self._move(
                rec, State.READY, "no readiness check" if ready is None else "ready check passed"
            )
            return
        assert ready is not None
        if now - (rec.started_at or now) >= ready.timeout:
            self.stop(rec.name, now, cause="not-ready")
            return
        # a check under way (on its own thread): look for its answer again shortly
        rec.next_probe = now + (ready.interval if answer is False else min(ready.interval, 0.05))

    def _watch(self, rec: Record, now: float) -> None:
        if rec.state not in (State.STARTING, State.READY, State.STOPPING) or rec.shim_pid is None:
            return
        ended = self.runtime.ended(rec.name, rec.shim_pid)
        if rec.state == State.STOPPING:
            # Past stop.timeout, or once the main process is gone, nothing may stay behind.
            if ended is not None or now >= (rec.stop_deadline or now):
                self._quietly(lambda: self.runtime.kill_all(rec.plan))
            if ended is None or self.runtime.populated(rec.plan):
                return  # stopped only once the main process ended and the cgroup is empty
            cause = rec.stop_cause or "stopped-by-operator"
            if cause == "not-ready":
                self._exited(rec, Exit("not-ready"), now, "not ready in time")
                return
            rec.pid = rec.shim_pid = None
            self._quietly(lambda: self.runtime.remove_cgroup(rec.plan))
            self._move(rec, State.STOPPED, _describe(ended, cause))
            if rec.pending is not None:
                rec.plan, rec.spec = rec.pending
                rec.launch_key, rec.pending = launch_key(*rec.pending), None
            if rec.start_after_stop:
                rec.start_after_stop = False
                self.start(rec.name, now)
            return
        if ended is not None:
            self._exited(rec, self._cause(rec, ended), now, rec.killed_for or "")

    def kill(self, name: str, now: float, why: str) -> bool:
        """Kill a running workload's whole cgroup at once, for memory (the memory guard):
        its exit is `killed for memory: WHY`, and its restart policy applies as to an OOM
        kill. False when it has no process to kill."""
        rec = self.records[name]
        if rec.state not in (State.STARTING, State.READY) or rec.pid is None:
            return False
        rec.killed_for = why
        self.runtime.kill_all(rec.plan)  # SIGKILL reaches frozen tasks too
        return True

    def _cause(self, rec: Record, ended: Ended) -> Exit:
        if rec.killed_for is not None:
            return Exit("killed-for-memory", signal=ended.signal)
        if ended.signal == signal.SIGKILL and self.runtime.oom_kills(rec.plan) > rec.oom_before:
            return Exit("oom", signal=ended.signal)
        if ended.signal is not None:
            return Exit("signal", signal=ended.signal)
        if ended.code is None:
            return Exit("lost")
        return Exit("exit-code", code=ended.code)

    def _exited(self, rec: Record, exit: Exit, now: float, detail: str = "") -> None:
        ran = now - (rec.started_at or now)
        rec.last_exit = exit.describe()
        self._move(rec, State.EXITED, exit.describe() + (f": {detail}" if detail else ""))
        rec.pid = rec.shim_pid = None
        if rec.frozen:
            rec.frozen = False
            self._quietly(lambda: self.runtime.freeze(rec.plan, False))
        # The workload's children die with it: a restart starts from an empty cgroup.
        self._quietly(lambda: self.runtime.kill_all(rec.plan))
        d = decide(rec.spec.restart, rec.history, exit, now, ran, self.jitter())
        rec.history = d.history
        if d.action == "restart":
            rec.restarts += 1
            rec.backoff_until = now + d.delay
            self._move(rec, State.BACKOFF, d.reason)
        elif d.action == "give-up":
            self._move(rec, State.FAILED, d.reason)
        else:
            self._move(rec, State.STOPPED, d.reason)

    def _quietly(self, action: Callable[[], None]) -> None:
        try:
            action()
        except NxrError as e:
            # The process or cgroup is already gone: nothing left to do, but say so.
            self.events.record(self.wall(), "-", "-", "-", f"ignored: {e}")


def _dependency_order(profile: Profile) -> list[str]:
    """Workload names with every `after` dependency before its dependents (no cycles: checked)."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name not in done:
            for dep in profile.workloads[name].after:
                visit(dep)
            done.append(name)

    for name in profile.workloads:
        visit(name)
    return done


def _describe(ended: Ended, cause: str) -> str:
    how = (
        Exit("signal", signal=ended.signal) if ended.signal else Exit("exit-code", code=ended.code)
    )
    return f"{cause.replace('-', ' ')} ({how.describe()})"
