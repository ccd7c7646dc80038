"""Fronts kept in step with their replicas and with the plan.

An event sink: events are recorded before the supervisor acts on them (a "stopping" event
before the stop signal), so a replica is out of rotation before it stops, and back once it
is ready. A front that (re)starts is told where every replica stands.

And a step in nxrd's loop: a front whose configuration changed (replicas added or removed,
another cap; by a reload, or while nxrd was down) is reloaded the way HAProxy reloads
without dropping a request: the new configuration written, SIGUSR2 to its master, which
starts a new worker on it while the old one finishes what it holds. Once the runtime API
answers from the new worker, it is told every replica's state.

Also the controller's admission at each front (priorities held back, the in-flight cap),
told once per change and again to a new worker, and the fronts' counters, sampled once a
second for status, metrics and the controller's observations, with the queue waits of the
requests each front logs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from nxrd.daemon.queue_waits import Waits
from nxrd.front.admin import FrontAdmin, FrontError, figures
from nxrd.front.render import serves, shed_table
from nxrd.front.requests import LoggedRequest
from nxrd.model.paths import FRONT_SOCKET, front_dir
from nxrd.model.plan import Plan
from nxrd.model.replicas import front_name, group_of, is_front
from nxrd.supervisor.events import Event
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Supervisor

RELOAD_TIMEOUT = 10.0  # HAProxy re-reads and checks its configuration in well under this
UNHEARD = 20  # requests a front serves with none logged to nxrd before a warning


class Rotation:
    """Each front's view of its replicas and of the controller, kept in step."""

    def __init__(
        self,
        plan: Callable[[], Plan],
        sup: Supervisor,
        state_dir: Path,
        admin: Callable[[Path], FrontAdmin],
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.sup, self.state_dir = plan, sup, state_dir
        self.admin, self.say = admin, say
        self.failing: set[str] = set()  # fronts whose last command failed (said once)
        self.told: dict[str, str] = {}  # replica -> the state its front was last told
        self.reloading: dict[str, tuple[int, float]] = {}  # front -> (old worker, deadline)
        self.runs: dict[str, str] = {}  # front -> the configuration it was seen to run
        self.figures: dict[str, dict[str, object]] = {}  # workload -> what its front counts
        # front -> (priorities held back, in-flight cap per replica): what the controller
        # wants, and what the front was last told
        self.admission: dict[str, tuple[frozenset[str], int]] = {}
        self.admitted: dict[str, tuple[frozenset[str], int]] = {}
        self.waits: dict[str, Waits] = {}  # front -> its logged requests' queue waits
        self.lines: dict[str, int] = {}  # front -> requests it logged to nxrd
        self.first: dict[str, int] = {}  # front -> requests it had admitted when first seen

    def __call__(self, e: Event) -> None:
        if is_front(e.workload):
            if e.new == State.READY:
                self.resync(group_of(e.workload))
            return
        group = group_of(e.workload)
        if e.workload in self.replicas(group):
            self.tell(group, e.workload, State(e.new))

    def resync(self, group: str) -> None:
        """Tell a new HAProxy (started, or reloaded) where each replica stands, and what
        the controller holds back."""
        for name in self.replicas(group):
            self.told.pop(name, None)
            self.tell(group, name, self.sup.records[name].state)
        self.admitted.pop(front_name(group), None)
        if front_name(group) in self.admission:
            self.admit(front_name(group), *self.admission[front_name(group)])

    def admit(self, front: str, held: frozenset[str], inflight: int) -> None:
        """The controller's admission at a front: the priorities it refuses, and the cap
        of requests in flight at each replica (docs/controller.md)."""
        self.admission[front] = (held, inflight)
        rec = self.sup.records.get(front)
        if self.admitted.get(front) == (held, inflight) or rec is None:
            return
        if rec.state != State.READY or front in self.reloading:
            return  # told when it is ready again (resync)
        group = group_of(front)
        admin = self._admin(front)
        before = self.admitted.get(front)
        try:
            for priority in ("low", "normal", "high"):
                if before is None or (priority in held) != (priority in before[0]):
                    admin.hold(priority, priority in held)
            if before is None or before[1] != inflight:
                for name in self.replicas(group):
                    if serves(self.sup.runtime.front_config(front) or "", name):
                        admin.set_inflight(group, name, inflight)
        except FrontError as e:
            self._warn(front, f"warning: {front} admission not changed: {e}")
            return
        self.admitted[front] = (held, inflight)

    def step(self, now: float) -> None:
        for wl in self.plan().workloads:
            rec = self.sup.records.get(wl.name)
            if wl.front_config is None or rec is None or rec.pid is None:
                continue
            if rec.state != State.READY:
                self.reloading.pop(wl.name, None)  # a start reads the new configuration
                continue
            admin = self._admin(wl.name)
            if wl.name in self.reloading:
                self._reloaded(wl.name, admin, now)
            elif self.runs.get(wl.name) == wl.front_config:
                continue  # no file read on every pass
            elif self.sup.runtime.front_config(wl.name) == wl.front_config:
                self.runs[wl.name] = wl.front_config
            else:
                try:
                    old = admin.worker()
                except FrontError as e:
                    self._warn(wl.name, f"warning: {wl.name} not reloaded: {e}")
                    continue
                self.sup.runtime.write_front(wl.name, wl.front_config)
                self.sup.runtime.signal(rec.pid, signal.SIGUSR2)
                self.reloading[wl.name] = (old, now + RELOAD_TIMEOUT)
                self.runs[wl.name] = wl.front_config

    def logged(self, front: str, r: LoggedRequest, now: float) -> None:
        """A request the front logged (to nxrd's latency socket)."""
        self.waits.setdefault(front, Waits()).add(now, r)
        self.lines[front] = self.lines.get(front, 0) + 1

    def sample(self, now: float) -> None:
        """What each ready front counts, for status, top and metrics (once a second)."""
        found: dict[str, dict[str, object]] = {}
        for wl in self.plan().workloads:
            rec = self.sup.records.get(wl.name)
            if wl.front_config is None or rec is None or rec.state != State.READY:
                continue
            group = group_of(wl.name)
            admin = self._admin(wl.name)
            try:
                found |= figures(group, admin.stats(), admin.counted(shed_table(group)))
            except FrontError:
                continue  # the next second's sample, or the warning of a command, says more
            found[wl.name] |= self.waits.setdefault(wl.name, Waits()).figures(now)
            self._unheard(wl.name, found[wl.name])
        self.figures = found

    def _unheard(self, front: str, counted: dict[str, object]) -> None:
        """A warning when a front serves requests but none of its log lines reach nxrd:
        the haproxy user cannot reach the socket (a --socket in a private directory)."""
        admitted = counted.get("admitted")
        if not isinstance(admitted, int) or self.lines.get(front):
            return
        first = self.first.setdefault(front, admitted)
        if admitted < first:  # a new worker counts from 0
            self.first[front] = first = admitted
        if admitted - first >= UNHEARD:
            where = self.sup.runtime.latency_socket
            self._warn(
                front,
                f"warning: {front} served {admitted - first} requests but logged none to"
                f" nxrd: can its worker (user haproxy) reach {where}? No queue waits, and"
                " no latency for slo.source.front, until it can",
            )

    def signals(self) -> dict[str, dict[str, float]]:
        """The fronts' queues and refusals (last second's sample), recorded with each
        controller decision as its inputs."""
        keys = ("queued", "admitted", "shed", "late")
        out: dict[str, dict[str, float]] = {}
        for name, f in self.figures.items():
            if is_front(name):
                out[name] = {k: float(v) for k in keys if isinstance(v := f.get(k), int)}
        return out

    def _reloaded(self, front: str, admin: FrontAdmin, now: float) -> None:
        old, deadline = self.reloading[front]
        try:
            worker = admin.worker()
        except FrontError:
            worker = old  # between workers
        if worker != old:
            del self.reloading[front]
            # as any front's "ready", this event has every replica's state told (__call__)
            self.sup.events.record(
                self.sup.wall(), front, "ready", "ready", "reloaded its configuration"
            )
        elif now > deadline:
            del self.reloading[front]
            self._warn(front, f"warning: {front} did not reload in {RELOAD_TIMEOUT:.0f} s")

    def _admin(self, front: str) -> FrontAdmin:
        return self.admin(front_dir(self.state_dir, front) / FRONT_SOCKET)

    def _warn(self, front: str, message: str) -> None:
        if front not in self.failing:
            self.failing.add(front)
            self.say(message)

    def replicas(self, group: str) -> list[str]:
        """The served workloads behind group's front (none when it has no front)."""
        names = [w.name for w in self.plan().workloads if group_of(w.name) == group]
        if front_name(group) not in names:
            return []
        return [n for n in names if not is_front(n) and n in self.sup.records]

    def tell(self, group: str, name: str, state: State) -> None:
        front = front_name(group)
        rec = self.sup.records.get(front)
        if rec is None or rec.state != State.READY or front in self.reloading:
            return  # it learns every state when it is next ready, or reloaded
        if not serves(self.sup.runtime.front_config(front) or "", name):
            return  # a replica its configuration does not have yet: told after the reload
        wanted = "ready" if state == State.READY else "maint"
        if self.told.get(name) == wanted:
            return
        try:
            self._admin(front).set_state(group, name, wanted)
        except FrontError as e:
            self._warn(front, f"warning: {name} not put in {wanted} state: {e}")
            return
        self.told[name] = wanted
        self.failing.discard(front)
