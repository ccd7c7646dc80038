"""The controller in nxrd's loop: latencies in, the law's rung out, cgroup values enforced.

Every action is an event carrying its inputs, and every value it writes is in the ledger
with the rung and the reason, so `nxrctl events` and `explain` say why.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable

from nxrd.controller.histogram import ScrapeError
from nxrd.controller.law import (
    COST_WINDOW,
    LadderState,
    Observation,
    Settings,
    ladder,
    rung_name,
    settings,
    step,
)
from nxrd.controller.poll import Fetched, Poller
from nxrd.controller.right_sizing import RightSizing
from nxrd.controller.samples import QUANTILES, SampleWindow
from nxrd.controller.scraped import Scraped
from nxrd.controller.spec import control_spec
from nxrd.errors import KernelError, NxrError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.ledger import Ledger
from nxrd.model.plan import Plan
from nxrd.profile.model import Profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.states import State as WorkloadState
from nxrd.supervisor.supervisor import Supervisor

# Seconds of a target's CPU use that say whether it may share its cores: long enough that
# a lightly loaded server's bursts stay under share_below, short enough to end sharing
# about a second after a load step that makes the server busy. Also the span a request's
# CPU cost is measured over (the law's COST_WINDOW).
BUSY_WINDOW = COST_WINDOW
# fewer requests than this in COST_WINDOW give no cost: one slow request would swing it
MIN_REQUESTS = 10
# the accept-queue prediction (law.py) needs only a rough CPU per request: a server of
# 140 ms a request at 60% of its capacity answers 8 in COST_WINDOW
MIN_SERVED = 4


class Controller:
    def __init__(
        self,
        profile: Profile,
        plan: Plan,
        fs: CgroupFS,
        sup: Supervisor,
        events: EventLog,
        ledger: Ledger,
        wall: Callable[[], float],
        admit: Callable[[str, frozenset[str], int], None] = lambda front, held, inflight: None,
        shape: Callable[[dict[str, int]], None] = lambda ceilings: None,
    ) -> None:
        self.fs, self.sup, self.events, self.ledger, self.wall = fs, sup, events, ledger, wall
        self.admit = admit  # a front's held-back priorities and in-flight cap (daemon/fronts.py)
        self.shape = shape  # shaped lower workloads' egress ceilings (daemon/egress_sync.py)
        self.spec = control_spec(profile, plan)
        self.sizing = RightSizing(sup, fs, ledger, wall)  # memory.high of right_size ones
        self.rungs = ladder(self.spec)
        self.period = profile.controller.period
        self.enabled = profile.controller.enabled and bool(self.spec.targets)
        self.state = LadderState()
        self.next_tick = 0.0
        self.requeued: set[str] = set()  # stopped by the controller, to start again
        self.froze: set[str] = set()  # frozen by the controller (an operator's stay frozen)
        self.inherited = False  # froze holds freezes a previous nxrd left: enforce once
        # (workload, file) -> (pid, value) last written or read back: only nxrd writes its
        # leaves, and a restarted process starts from the plan, so held values are not
        # re-read every tick (150 reads a tick with 50 workloads)
        self.held: dict[tuple[str, str], tuple[int, str]] = {}
        # what the current rung means: the same every tick until the rung changes
        self.wanted: tuple[tuple[int, tuple[tuple[int, str], ...]], Settings] | None = None
        self.actions: dict[tuple[str, str], int] = {}  # (direction, rung) -> decisions
        self.windows: dict[str, SampleWindow] = {}  # push and probe: exact samples
        self.scraped: dict[str, Scraped] = {}  # prometheus
        self.last_sample: dict[str, float] = {}
        self.pushed: set[str] = set()  # targets that push each request's latency
        self.fronted: set[str] = set()  # targets whose front logs each request's latency
        self.used: dict[str, deque[tuple[float, float]]] = {}  # target -> (tick, CPU %)
        self.fetched: queue.Queue[Fetched] = queue.Queue()
        self.pollers: list[Poller] = []
        self.failing: dict[str, str | None] = {}  # the source's last error, said once
        self.noted: set[str] = set()
        for t in self.spec.targets:
            slo = profile.workloads[t.name].slo
            assert slo is not None
            self.windows[t.name] = SampleWindow(slo.window)
            src = slo.source
            if src.push:
                self.pushed.add(t.name)
            if src.front:
                self.pushed.add(t.name)  # one sample per request answered, as pushed ones
                self.fronted.add(t.name)
            if not self.enabled:
                continue
            if src.prometheus is not None:
                p = src.prometheus
                self.scraped[t.name] = Scraped.of(slo.window, p.metric, p.preset, p.labels)
                timeout = max(1.0, p.interval)
                self.pollers.append(Poller(t.name, p.url, p.interval, timeout, self.fetched))
            elif src.probe is not None:
                timeout = max(1.0, 2 * t.slo)
                self.pollers.append(
                    Poller(t.name, src.probe.url, src.probe.interval, timeout, self.fetched)
                )

    def push(self, workload: str, seconds: float, now: float) -> None:
        window = self.windows.get(workload)
        if window is not None:
            window.add(now, seconds)
            self.last_sample[workload] = now

    def served(self, replica: str, seconds: float, now: float) -> None:
        """A request its front logged as answered by replica: arrival to last byte, queue
        included (for targets with slo.source.front)."""
        if replica in self.fronted:
            self.push(replica, seconds, now)

    def close(self) -> None:
        """Stop the sources' threads (the controller is replaced or nxrd exits)."""
        for p in self.pollers:
            p.close()

    def _drain(self, now: float) -> None:
        """Results of the prometheus and probe sources since the last tick."""
        while True:
            try:
                f = self.fetched.get_nowait()
            except queue.Empty:
                return
            error = f.error
            scraped = self.scraped.get(f.workload)
            if scraped is not None and f.body is not None:
                try:
                    scraped.add(now, f.body)
                    self.last_sample[f.workload] = now
                except ScrapeError as e:
                    error = str(e)
            elif scraped is None and (f.body is not None or f.timed_out):
                # a probe: its time is the latency, a timeout at least that much
                self.push(f.workload, f.seconds, now)
            self._say(f.workload, scraped, error)

    def _say(self, workload: str, scraped: Scraped | None, error: str | None) -> None:
        """An event when a source starts or stops failing, and its precision note once."""
        kind = "prometheus" if scraped is not None else "probe"
        if error != self.failing.get(workload):
            self.failing[workload] = error
            why = f"{workload}: slo.source {kind} " + (
                f"failing: {error}" if error else "answering"
            )
            self.events.record(self.wall(), "controller", "-", "-", why)
        if scraped is not None and workload not in self.noted and error is None:
            target = next(t.slo for t in self.spec.targets if t.name == workload)
            note = scraped.note(target)
            if note is not None:
                self.noted.add(workload)
                self.events.record(self.wall(), "controller", "-", "-", f"{workload}: {note}")

    def wakeup(self, now: float) -> float:
        """Seconds until the next tick."""
        return max(0.0, self.next_tick - now) if self.enabled else 3600.0

    def tick(self, now: float, observe: Callable[[list[str]], dict[str, dict[str, float]]]) -> None:
        """observe(names): this tick's signals of those workloads (observe.py's usage and
        pressure signals), read only when the tick is due."""
        self.sizing.step(now)  # on its own intervals, with or without latency targets
        if not self.enabled or now < self.next_tick:
            return
        self.next_tick = now + self.period
        self._drain(now)
        latency = {t.name: self.latency(t.name, now) for t in self.spec.targets}
        age = {n: now - self.last_sample.get(n, float("-inf")) for n in latency}
        before = self.state.level
        names = [t.name for t in self.spec.targets] + [w.name for w in self.spec.lowers]
        signals = observe(names)
        busy = self.busy(now, signals)
        served = self.service(now, busy)
        service = {n: cpu for n, (cpu, answered) in served.items() if answered >= MIN_SERVED}
        cost = {n: cpu for n, (cpu, answered) in served.items() if answered >= MIN_REQUESTS}
        queued = {
            t.name: q
            for t in self.spec.targets
            if (q := signals.get(t.name, {}).get("listen_queue")) is not None
        }
        if not self.spec.judge:
            cost = {}
        observed = Observation(latency, age, signals, self.recent(now), busy, cost, queued, service)
        self.state, decisions = step(self.state, observed, self.spec, now)
        for d in decisions:
            self.actions[(d.direction, d.rung)] = self.actions.get((d.direction, d.rung), 0) + 1
            self.events.record(
                self.wall(),
                "controller",
                self._rung(before),
                d.rung,
                d.reason,
                {"direction": d.direction, "level": d.level, **d.inputs},
            )
        if decisions or self.state.level != 0 or self.inherited:
            self.inherited = False
            why = decisions[-1].reason if decisions else "holding"
            self._enforce(now, f"controller: {self._rung(self.state.level)} ({why})")

    def inherit_freeze(self, name: str) -> bool:
        """A lower workload the previous nxrd's controller froze and left frozen (it was
        killed): lifted at the next tick unless this controller's rung freezes it too.
        False: this controller does not act on it (disabled, or no longer a lower)."""
        if not self.enabled or all(w.name != name for w in self.spec.lowers):
            return False
        self.froze.add(name)
        self.next_tick = 0.0
        self.inherited = True
        return True

    def release(self, now: float, why: str) -> None:
        """Back to the profile's static values at once (the profile changed, nxrd stops)."""
        self.sizing.release(why)
        if self.state.level == 0 and not self.froze and not self.requeued:
            return
        before, self.state = self.state.level, LadderState()
        self.events.record(self.wall(), "controller", self._rung(before), "static", why)
        self._enforce(now, f"controller: static ({why})")

    def latency(self, workload: str, now: float) -> float | None:
        """The observed latency at the workload's SLO percentile, for status and metrics."""
        window = self.windows.get(workload)
        target = next((t for t in self.spec.targets if t.name == workload), None)
        if window is None or target is None:
            return None
        scraped = self.scraped.get(workload)
        if scraped is not None:
            return scraped.latency(QUANTILES[target.percentile])
        return window.percentile(QUANTILES[target.percentile], now)

    def recent(self, now: float) -> dict[str, float | None]:
        """Per pushed or probed target, its percentile over the requests since the last
        rung change (scraped histograms have no per-request times: absent)."""
        return {
            t.name: self.windows[t.name].percentile_since(
                QUANTILES[t.percentile], self.state.changed_at, now
            )
            for t in self.spec.targets
            if t.name not in self.scraped
        }

    def busy(self, now: float, signals: dict[str, dict[str, float]]) -> dict[str, float]:
        """Per target with cores of its own: the share of them it used over BUSY_WINDOW,
        the mean of its ticks' CPU use (ticks come at a steady pace)."""
        out = {}
        for t in self.spec.targets:
            used = self.used.setdefault(t.name, deque())
            percent = signals.get(t.name, {}).get("cpu_percent")
            if percent is not None:
                used.append((now, percent))
            while used and used[0][0] <= now - BUSY_WINDOW:
                used.popleft()
            if t.cpus and used:
                out[t.name] = sum(p for _, p in used) / len(used) / 100 / len(t.cpus)
        return out

    def service(self, now: float, busy: dict[str, float]) -> dict[str, tuple[float, int]]:
        """Per pushing target with cores of its own: CPU seconds per request answered over
        the last COST_WINDOW (its busy share of its cores over the same span), and how many
        were answered, where any were; probes are nxrd's own few requests, not its load."""
        out = {}
        for t in self.spec.targets:
            window = self.windows[t.name]
            if t.name not in busy or t.name not in self.pushed or window.seconds < COST_WINDOW:
                continue
            answered = sum(1 for at, _ in window.samples if at > now - COST_WINDOW)
            if answered:
                out[t.name] = (busy[t.name] * len(t.cpus) * COST_WINDOW / answered, answered)
        return out

    def summary(self) -> dict[str, object]:
        """For the metrics endpoint."""
        return {"level": self.state.level, "actions": dict(self.actions)}

    def _rung(self, level: int) -> str:
        return rung_name(level, self.rungs)

    def _enforce(self, now: float, cause: str) -> None:
        """Make the running workloads match the rung: values, freezes, stops."""
        rung = (self.state.level, self.state.loans)  # all that settings() reads of the state
        if self.wanted is None or self.wanted[0] != rung:
            self.wanted = (rung, settings(self.state, self.spec))
        want = self.wanted[1]
        with self.ledger.because(cause):
            for name, files in want.files.items():
                rec = self.sup.records.get(name)
                if rec is None or rec.pid is None:
                    continue  # not running: it starts with its planned values
                for filename, value in files.items():
                    if self.held.get((name, filename)) == (rec.pid, value):
                        continue
                    try:
                        if self.fs.read(rec.plan.cgroup, filename) != value:
                            self.fs.write(rec.plan.cgroup, filename, value)
                    except KernelError:
                        continue  # the leaf went away with its process: nothing to hold
                    self.held[(name, filename)] = (rec.pid, value)
        for front, (held, inflight) in want.admission.items():
            self.admit(front, held, inflight)
        if want.egress:
            self.shape(want.egress)
        for w in self.spec.lowers:
            rec = self.sup.records.get(w.name)
            if rec is None:
                continue
            frozen = w.name in want.frozen
            try:
                if frozen and not rec.frozen and rec.state == WorkloadState.READY:
                    self.sup.freeze(w.name, now, cause=cause, by="controller")
                    self.froze.add(w.name)
                elif not frozen and w.name in self.froze:
                    self.froze.discard(w.name)
                    if rec.frozen:
                        self.sup.thaw(w.name, now, cause=cause)
            except NxrError:
                pass
            if w.name in want.stopped and rec.state in (
                WorkloadState.STARTING,
                WorkloadState.READY,
            ):
                self.sup.stop(w.name, now, cause="stopped-by-controller")
                self.requeued.add(w.name)
            elif w.name not in want.stopped and w.name in self.requeued:
                self.requeued.discard(w.name)
                self.sup.start(w.name, now)
