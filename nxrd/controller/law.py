"""The control law: latency slack of latency-critical workloads -> a rung on a ladder of
actions on the lower classes. Pure: (state, observation, spec, now) -> (state, decisions).

The ladder, bottom to top (each rung includes those below it):

    share       (below static, only with `share`) batch may also run on the latency-critical
                workloads' cores, at its low weight: the capacity those leave idle goes to
                batch work while every SLO is comfortably met and every target uses under
                `share_below` of its cores. Not background: a task at cpu.idle keeps the
                CPU from going idle, so the scheduler never pulls a batch thread there, and
                background would take what batch could have
    static      the profile's own values (level 0)
    weight      lower classes' cpu.weight cut (batch to a tenth, interactive to half); only
                where a lower class shares a CPU with a target (weights act per CPU)
    cap-N%      batch capped with cpu.max at N% of its cores; background at its floor
                where it shares a CPU with batch (it would take what batch leaves), else
                at N% of its cores too. Batch workloads of several `priority` values are
                capped a step apart, the lowest first (cap_groups): cap-75%, then
                cap-50%/75% (lowest at 50%, the next at 75%), ... until all are at 25%
    core-N      N shared CPUs lent to the latency-critical workload furthest from its SLO,
                removed from the lower classes' cpusets (each keeps at least one; at most
                as many as the largest target has)
    freeze-C    class C frozen; with several priorities in it, freeze-C@P freezes those
                of priority P and lower, the lowest first
    stop-C      class C stopped (if their control.stop allows: background's does by
                default), started again when the controller steps back down; stop-C@P as
                freeze-C@P. Background is frozen and stopped before batch is frozen
    hold-P      at the fronts of the targets' served workloads (docs/front.md), requests of
                priority P refused at once with 503 and Retry-After (low first, then
                normal): the model keeps its SLO for the requests that matter most
    inflight-N% the fronts' in-flight cap per replica cut to N% of the profile's (at least
                1): fewer requests share the model at once, each is answered sooner, and
                the excess waits in the queue or is refused there

One rung up when the worst slack falls under `act_below` (from share straight back to
static), one down once every slack has stayed above `relax_above` for `relax_after`; never
more than `max_step` rungs per tick, and never twice within `cooldown`. Missing or stale
latency moves back to the profile's static values (rung 0), at the same pace.
Latency-critical workloads are never capped.

Stepping down, once begun, goes on a rung per cooldown while comfort lasts and the requests
started since the last step down (`Observation.recent`) were comfortable too: that rung has
then shown it keeps the SLO, and waiting `relax_after` again at each rung leaves batch
capped or frozen for most of a load's ebb (five rungs: over 20 s). While any target lacks
per-request latency (a scraped histogram), or those requests are not comfortable, or less
than one SLO has passed since that step (a slow request still running is not seen yet),
each step down waits `relax_after` after the last change.

A rung above static held for `probe_after` with no slack under `act_below` (since the
rung was reached, or since the last tick one was under it), and inside the band now, is
tried one lower, if the requests since it was reached were within `act_below` too: at a
steady load near a server's limit the percentile rarely stays above `relax_above` for
`relax_after`, and without trying, caps and freezes held through the whole load (in the
test VM, 30 s at 60% of the server's capacity, batch at 0.4-0.8x what pinning gave it).
A try answered by a climb within `probe_after` doubles the wait before the next (up to
eight times `probe_after`); one that held that long, a step down on comfort or a
fallback resets it.

Sharing also ends, before any latency shows it, once a target uses `share_below` of its
cores or more (`Observation.busy`), and starts again only under four fifths of that, once
comfort has lasted `relax_after` since the last tick it was busier.
Sharing costs the target something on every request (a batch thread to preempt, caches
that batch work used in between), which a lightly loaded server absorbs and a busy one's
queue amplifies: in the test VM, sharing at 60% load ended on slow windows seconds after
the step, and no rung climbed after that brought them back.

With `judge` (off by default), climbs above static are judged by what they bought: where
every target's requests are all seen (`Observation.cost`: CPU seconds per request
answered), COST_WINDOW after the last of a run of climbs (or once a cost is known again),
unless some target's requests got MIN_GAIN cheaper than before the first, the rungs are
stepped back at once and the ladder climbs no higher for CEILING_FOR, unless requests get
MIN_GAIN dearer than on the held rung (measured COST_WINDOW after it). A target on cores of
its own is slowed by lower classes only through what it shares with them (memory bandwidth,
caches, the host's CPUs under a VM), which makes each request dearer; latency that rises
with each request's cost unchanged is the target's own queue, which no cap on another core
shortens. In the test VM the server's CPU per request under caps or freezes was within
-8% to +10% of that at static in the same runs (rep9-rep12): the climbs there cost batch
work its CPU for nothing.
Climbs that lend cores are not judged: more cores make no request cheaper.

A queue shows first. Where a target declares a port and its CPU per request is known
(`Observation.service`: it pushes each request's latency and has cores of its own), the
next request's slack is also predicted from the connections waiting in its accept queue
(`Observation.queued`): it is answered after them, (queued + 1) x service / cores from
now. The lower of that and the measured slack counts, and a predicted one under
`act_below` is fresh evidence by itself: the requests in the queue have not started, and
the percentile sees each only once it is answered, late. In the test VM (docs/benchmarks.md)
the demo's server at 60% of its capacity rarely has over three waiting; a burst that
queues eight is over its SLO before the first of them is answered.

Climbing again needs fresh evidence. A windowed percentile keeps a burst's slow requests
for the whole window after the rung that answered it; climbing on them alone winds the
ladder up (caps, then freezes) for latency that has already recovered. Where the source
gives it (`Observation.recent`: the percentile of the requests that started after the last
rung change), a climb from static or above also needs that recent latency under
`act_below`; while it is fine the controller holds, and the evidence grows with every
request until it is not. Started, not answered: the backlog a rung inherits (requests
queued under the one before) shows the old conditions, and climbing on it caps batch work
for a queue that is already draining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from nxrd.model.classes import CLASSES, policy
from nxrd.model.units import format_cpu_list
from nxrd.model.values import cpu_max, cpu_quota

CAPS = (75, 50, 25)
HOLDS = ("low", "normal")  # request priorities held back at the fronts, in this order
INFLIGHT_CUTS = (50,)  # the fronts' in-flight caps, in percent of the profile's
NET_CUTS = (50, 25)  # shaped lower workloads' egress ceilings, in percent of the planned
# the classes the ladder acts on (the class policy, nxrd/model/classes.py)
LOWER = tuple(p.name for p in CLASSES.values() if not p.protected)
CAPPED = tuple(p.name for p in CLASSES.values() if p.capped)
FROZEN = tuple(
    p.name
    for p in sorted(CLASSES.values(), key=lambda p: p.freeze_order or 0)
    if p.freeze_order is not None
)
STOPPED = tuple(p.name for p in CLASSES.values() if p.stoppable)


@dataclass(frozen=True)
class Target:
    """A latency-critical workload with an SLO."""

    name: str
    slo: float  # seconds, at `percentile`
    percentile: str = "p99"
    cpus: tuple[int, ...] = ()  # its planned (exclusive) cores

    def slack(self, latency: float) -> float:
        """How far under the SLO, as a share of it (negative: over)."""
        return (self.slo - latency) / self.slo


@dataclass(frozen=True)
class Lower:
    """A workload of a lower class that the controller may squeeze."""

    name: str
    workload_class: str  # interactive, batch or background
    cpus: tuple[int, ...]  # its planned cpuset
    weight: int | None  # planned cpu.weight; None when it runs at cpu.idle
    min_cpu: float = 0.1  # floor of any cap, in CPUs
    may_freeze: bool = True
    may_stop: bool = False
    cpu_max: float | None = None  # the profile's own cap, in CPUs
    egress: int | None = None  # its planned egress ceiling in bits/s, when it is shaped
    priority: int = 500  # within its class, the lower is capped, frozen and stopped first


@dataclass(frozen=True)
class Front:
    """The request front of a served workload whose replicas are targets."""

    name: str  # the front workload, NAME.front
    inflight: int  # the profile's cap per replica


@dataclass(frozen=True)
class Spec:
    targets: tuple[Target, ...]
    lowers: tuple[Lower, ...]
    act_below: float = 0.10  # act when (SLO - observed) / SLO falls under this
    relax_above: float = 0.30
    relax_after: float = 5.0  # seconds every slack must stay above relax_above
    cooldown: float = 2.0  # seconds between two rung changes
    max_step: int = 1
    stale_after: float = 5.0  # a latency older than this is no latency
    period: int = 100_000  # cpu.max period, microseconds
    share: bool = True  # may go below static: batch on the targets' cores
    share_below: float = 0.5  # ...only while each target uses under this share of its cores
    probe_after: float | None = 15.0  # try a rung lower after this long in the band (None: never)
    judge: bool = False  # step back from climbs that did not make requests cheaper in CPU
    fronts: tuple[Front, ...] = ()
    lend: bool = True  # may lend shared cores to targets (not where cpusets are another's)


@dataclass(frozen=True)
class Observation:
    latency: dict[str, float | None]  # per target, at its percentile, over its window
    age: dict[str, float] = field(default_factory=dict)  # seconds since measured
    # per workload, recorded with each decision: pressure, throttling, memory (observe.py)
    signals: dict[str, dict[str, float]] = field(default_factory=dict)
    # per target whose source has each request: the percentile of those started since the
    # last rung change (None: none yet); a target missing here is judged on `latency` alone,
    # and every step down then waits relax_after
    recent: dict[str, float | None] = field(default_factory=dict)
    # per target with cores of its own: the share of them it used lately (1.0: all); a
    # target missing here is judged on latency alone
    busy: dict[str, float] = field(default_factory=dict)
    # per target whose every request nxrd sees, with cores of its own: its CPU seconds per
    # request answered over the last COST_WINDOW (missing: too few requests to say), for
    # judging climbs (spec.judge)
    cost: dict[str, float] = field(default_factory=dict)
    # per target that declares a port: connections waiting in its accept queue now
    queued: dict[str, float] = field(default_factory=dict)
    # per target: its CPU seconds per request, as cost but whether or not climbs are judged
    service: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LadderState:
    level: int = 0  # -1 share, 0 static, N the Nth rung of the ladder
    changed_at: float = float("-inf")
    comfortable_since: float | None = None
    loans: tuple[tuple[int, str], ...] = ()  # (core, target) lent, oldest first
    probed: bool = False  # this rung was reached by trying one lower (probe_after)
    failed: int = 0  # tries answered by a climb, in a row
    risk_at: float = float("-inf")  # the last tick a slack was under act_below
    # a climb being judged (spec.judge): the level it started from and the targets' cost then
    judged_from: int | None = None
    cost_before: tuple[tuple[str, float], ...] = ()
    # a judged climb did not help: no climbing above `ceiling` until `ceiling_until`, unless
    # a target's requests get dearer than `ceiling_cost` (new interference)
    ceiling: int | None = None
    ceiling_until: float = float("-inf")
    ceiling_cost: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Decision:
    direction: str  # "up", "down", "fallback"
    level: int  # the rung reached
    rung: str  # its name, e.g. "cap-50%"
    reason: str
    inputs: dict[str, Any]


def ladder(spec: Spec) -> list[str]:
    """The rungs this profile can climb (only those with something to act on)."""
    lowers = spec.lowers
    rungs = []
    if any(w.weight is not None and _competes(w, t) for w in lowers for t in spec.targets):
        rungs.append("weight")
    _, groups = cap_groups(spec)
    for n in range(1, len(CAPS) + len(groups) if groups else 0):
        caps = [c for c in (_cap(n, g) for g in range(len(groups))) if c is not None]
        rungs.append("cap-" + "/".join(f"{c}%" for c in caps))
    if any(w.egress is not None for w in lowers):
        rungs += [f"net-{c}%" for c in NET_CUTS]
    if spec.lend:
        rungs += [f"core-{i + 1}" for i in range(len(_lendable(spec)))]
    for cls in FROZEN:  # each class frozen, then stopped, before the next is touched
        for verb, may in (("freeze", "may_freeze"), ("stop", "may_stop")):
            if verb == "stop" and cls not in STOPPED:
                continue
            prios = sorted(
                {w.priority for w in lowers if w.workload_class == cls and getattr(w, may)}
            )
            if len(prios) == 1:
                rungs.append(f"{verb}-{cls}")
            else:
                rungs += [f"{verb}-{cls}@{p}" for p in prios]
    if spec.fronts:
        rungs += [f"hold-{p}" for p in HOLDS]
    if any(f.inflight > 1 for f in spec.fronts):
        rungs += [f"inflight-{c}%" for c in INFLIGHT_CUTS]
    return rungs


def cap_groups(spec: Spec) -> tuple[str | None, list[int]]:
    """The class whose priorities the cap rungs go through, and those, lowest first: the
    highest capped class present (batch, else background). Its lowest priority is capped a
    step ahead of the next (`_cap`); a class below it gets the lowest priority's cap. One
    priority (the default 500 everywhere): the three rungs cap-75%, cap-50%, cap-25%.
    (None, []): nothing to cap."""
    for cls in CAPPED:
        prios = {w.priority for w in spec.lowers if w.workload_class == cls}
        if prios:
            return cls, sorted(prios)
    return None, []


def _cap(n: int, group: int) -> int | None:
    """The cap, in percent of its cores, of the group-th lowest priority once n cap rungs
    are climbed (None: not capped yet)."""
    at = n - 1 - group
    return CAPS[min(at, len(CAPS) - 1)] if at >= 0 else None


def _acted(rungs: list[str], verb: str, w: Lower) -> bool:
    """Whether a climbed rung freezes or stops w: `VERB-CLASS`, or `VERB-CLASS@P` for the
    class's workloads of priority P and lower."""
    for r in rungs:
        head, _, prio = r.partition("@")
        if head == f"{verb}-{w.workload_class}" and (not prio or w.priority <= int(prio)):
            return True
    return False


def _competes(w: Lower, t: Target) -> bool:
    """Whether w can run on a CPU t runs on (a target without cores runs anywhere)."""
    return not t.cpus or bool(set(w.cpus) & set(t.cpus))


SHARE = "share"
SHARED_CLASSES = tuple(p.name for p in CLASSES.values() if p.shares)
# sharing starts again only under this share of share_below, so that a load near it does
# not start and end sharing every relax_after
SHARE_AGAIN = 0.8
# a try answered by a climb doubles the wait before the next, up to 2**PROBE_BACKOFF times
PROBE_BACKOFF = 3
# judging a climb (spec.judge): seconds of requests its cost is measured over, the least
# share cheaper that counts as help (the test VM's CPU per request drifted by 5-10% within
# seconds, rep13: at 5%, drift judged two useless climbs as help), and how long a climb
# that did not help keeps the ladder down
COST_WINDOW = 2.0
MIN_GAIN = 0.10
CEILING_FOR = 30.0


def floor(spec: Spec) -> int:
    """The lowest level: -1 when sharing the targets' cores has something to share."""
    can = any(t.cpus for t in spec.targets) and any(
        w.workload_class in SHARED_CLASSES for w in spec.lowers
    )
    return -1 if spec.share and can else 0


def rung_name(level: int, rungs: list[str]) -> str:
    if level < 0:
        return SHARE
    return rungs[level - 1] if level else "static"


def step(
    state: LadderState, obs: Observation, spec: Spec, now: float
) -> tuple[LadderState, list[Decision]]:
    """One controller tick."""
    rungs = ladder(spec)
    slacks, stale = _slacks(obs, spec)
    ahead = {n: s for n, s in _ahead(obs, spec).items() if n in slacks and s < slacks[n]}
    slacks.update(ahead)  # a queue that will answer late counts as its lateness
    worst = min(slacks.items(), key=lambda kv: kv[1], default=None)
    inputs: dict[str, Any] = {
        "observed": {t.name: obs.latency.get(t.name) for t in spec.targets},
        "slo": {t.name: t.slo for t in spec.targets},
        "slack": {n: round(s, 3) for n, s in slacks.items()},
        "signals": dict(obs.signals),
    }
    if ahead:
        inputs["queued"] = {n: obs.queued[n] for n in ahead}
    if obs.recent:
        inputs["recent"] = dict(obs.recent)
    if obs.busy:
        inputs["busy"] = {n: round(b, 3) for n, b in obs.busy.items()}
    if obs.cost:
        inputs["cost"] = {n: round(c, 4) for n, c in obs.cost.items()}
    cooled = now - state.changed_at >= spec.cooldown
    if stale:
        # No latency, no guessing: back down towards the profile's static values.
        state = replace(state, comfortable_since=None)
        if state.level == 0 or not cooled:
            return state, []
        why = f"latency of {', '.join(stale)} missing or stale: back towards static values"
        by = -spec.max_step if state.level > 0 else -state.level
        return _move(state, by, "fallback", why, inputs, spec, rungs, now, None)
    if worst is None:
        return state, []
    name, slack = worst
    if state.judged_from is not None and cooled and now - state.changed_at >= COST_WINDOW:
        verdict = _judged(state, obs, spec, rungs, now, inputs)
        if isinstance(verdict, tuple):
            return verdict
        if verdict:  # it helped: the rungs stay (until then, judging waits for a cost)
            state = replace(state, judged_from=None, cost_before=())
    state = _hold_measured(state, obs, spec, now)
    if slack < spec.act_below:
        state = replace(state, comfortable_since=None, risk_at=now)
        if state.level >= len(rungs) or not cooled:
            return state, []
        if state.level >= 0:  # sharing, the riskiest rung, ends on the window alone
            fresh = [
                (n, s)
                for n, s in slacks.items()
                if s < spec.act_below and (n in ahead or not _recovered(n, obs, spec))
            ]
            if not fresh:
                return state, []
            name, slack = min(fresh, key=lambda kv: kv[1])
            if _held_down(state, obs, now):
                return state, []
        why = f"{name} slack {slack:.0%} under {spec.act_below:.0%}" + (
            f" ({obs.queued[name]:.0f} requests waiting to be accepted)" if name in ahead else ""
        )
        by = spec.max_step if state.level >= 0 else -state.level  # sharing ends at once
        if (
            state.ceiling is not None
            and 0 <= state.level < state.ceiling
            and _holding(state, obs, now)
        ):
            by = min(by, state.ceiling - state.level)  # up to the held rung, not past it
        new, decisions = _move(state, by, "up", why, inputs, spec, rungs, now, name)
        new = replace(new, failed=_failed(state, spec, now))
        if state.ceiling is not None and state.level >= state.ceiling:
            new = replace(new, ceiling=None, ceiling_until=float("-inf"), ceiling_cost=())
        return _to_judge(state, new, obs, spec, rungs), decisions
    # a value that is not a number says nothing about headroom: as busy as can be
    busy = {n: b if math.isfinite(b) else 1.0 for n, b in obs.busy.items()}
    busiest = max(busy.items(), key=lambda kv: kv[1], default=None)
    if state.level < 0 and busiest is not None and busiest[1] >= spec.share_below:
        if not cooled:
            return state, []
        why = f"{busiest[0]} uses {busiest[1]:.0%} of its cores, {spec.share_below:.0%} or more"
        return _move(state, 1, "up", why, inputs, spec, rungs, now, None)
    if min(slacks.values()) > spec.relax_above:
        since = state.comfortable_since if state.comfortable_since is not None else now
        state = replace(state, comfortable_since=since)
        if state.level <= floor(spec) or not cooled:
            return state, []
        if (
            state.level == 0
            and busiest is not None
            and busiest[1] >= SHARE_AGAIN * spec.share_below
        ):
            # comfortable, but too busy to share: static holds, and the relax_after that
            # sharing needs counts from when the target was last this busy, so that a
            # load swinging around the line does not start and end sharing every time
            return replace(state, comfortable_since=None), []
        proven = since < state.changed_at and all(
            _relaxed(t, obs, spec, now - state.changed_at) for t in spec.targets
        )
        if not proven and now - max(since, state.changed_at) < spec.relax_after:
            return state, []
        why = f"every slack above {spec.relax_above:.0%} for {now - since:.1f}s" + (
            ", and at the last rung" if proven else ""
        )
        new, decisions = _move(state, -1, "down", why, inputs, spec, rungs, now, None)
        return replace(new, comfortable_since=since), decisions  # comfort lasts on down
    state = replace(state, comfortable_since=None)  # inside the band
    wait = _probe_wait(state, spec)
    calm = now - max(state.changed_at, state.risk_at)  # no slack under act_below since
    if (
        state.level > 0
        and cooled
        and wait is not None
        and calm >= wait
        and not any(n in obs.recent and not _recovered(n, obs, spec) for n in slacks)
    ):
        why = f"{calm:.1f}s with no slack under {spec.act_below:.0%}: trying a rung lower"
        new, decisions = _move(state, -1, "down", why, inputs, spec, rungs, now, None)
        # a try right after a try: the one before held for a whole wait
        return replace(new, probed=True, failed=0 if state.probed else state.failed), decisions
    return state, []  # hold


def _to_judge(
    old: LadderState, new: LadderState, obs: Observation, spec: Spec, rungs: list[str]
) -> LadderState:
    """A climb from static or above, to be judged COST_WINDOW after the last of the climbs
    in a row, against the targets' cost before the first. Not a climb that lends cores:
    more cores do not make a request cheaper, they take the queue's work in parallel."""
    if not spec.judge or old.level < 0:
        return new
    start = old.judged_from if old.judged_from is not None else old.level
    before = old.cost_before if old.judged_from is not None else _costs(obs, spec)
    if not before or any(r.startswith("core-") for r in rungs[start : new.level]):
        return new
    return replace(new, judged_from=start, cost_before=before)


def _costs(obs: Observation, spec: Spec) -> tuple[tuple[str, float], ...]:
    """Every target's cost, or none: a climb made for a target that has no cost (scraped,
    probed, sharing its cores) cannot be judged on another's."""
    costs = _finite(obs.cost)
    if any(t.name not in costs for t in spec.targets):
        return ()
    return tuple(sorted(costs.items()))


def _judged(
    state: LadderState,
    obs: Observation,
    spec: Spec,
    rungs: list[str],
    now: float,
    inputs: dict[str, Any],
) -> tuple[LadderState, list[Decision]] | bool:
    """The climbs since `judged_from`, judged by the targets' CPU per request: latency on
    cores of their own that lower classes slow down only through the memory, caches and
    host they share, which makes each request dearer. No target's requests at least MIN_GAIN
    cheaper: those rungs took CPU from batch work for nothing (the latency is the target's
    own queue), so back down to where the climbs began, and no higher for CEILING_FOR.
    True: it helped; False: no cost to judge by yet (too few requests): judged later."""
    assert state.judged_from is not None
    now_cost = dict(_costs(obs, spec))
    if not now_cost:
        return False
    if any(now_cost[n] <= c * (1 - MIN_GAIN) for n, c in state.cost_before):
        return True
    went = ", ".join(
        f"{n} {now_cost[n] * 1000:.1f} ms of CPU a request, {c * 1000:.1f} ms before"
        for n, c in state.cost_before
    )
    why = (
        f"{rung_name(state.level, rungs)} did not make requests {MIN_GAIN:.0%} cheaper "
        f"({went}): back to {rung_name(state.judged_from, rungs)}, and no higher for "
        f"{CEILING_FOR:g}s unless requests get {MIN_GAIN:.0%} dearer"
    )
    by = state.judged_from - state.level
    new, decisions = _move(state, by, "down", why, inputs, spec, rungs, now, None)
    # "dearer" is measured against the rung held, once COST_WINDOW of it has passed
    # (_hold_measured): against the rung left, a climb that helped a little would leave
    # the held rung already that much dearer, and drift would lift the hold
    held = replace(new, ceiling=new.level, ceiling_until=now + CEILING_FOR, ceiling_cost=())
    return held, decisions


def _hold_measured(state: LadderState, obs: Observation, spec: Spec, now: float) -> LadderState:
    """The held rung's cost, taken once COST_WINDOW of it has passed."""
    if (
        state.ceiling is None
        or state.ceiling_cost
        or now - (state.ceiling_until - CEILING_FOR) < COST_WINDOW
    ):
        return state
    return replace(state, ceiling_cost=_costs(obs, spec))


def _held_down(state: LadderState, obs: Observation, now: float) -> bool:
    """Whether a judged climb that did not help keeps the ladder from climbing above this
    rung."""
    return state.ceiling is not None and state.level >= state.ceiling and _holding(state, obs, now)


def _holding(state: LadderState, obs: Observation, now: float) -> bool:
    """Whether the hold lasts: until CEILING_FOR has passed, or a target's requests are
    MIN_GAIN dearer than on the held rung (new interference); before that rung's cost is
    measured, it lasts."""
    if state.ceiling is None or now >= state.ceiling_until:
        return False
    costs = _finite(obs.cost)
    return not any(costs.get(n, 0.0) >= c * (1 + MIN_GAIN) for n, c in state.ceiling_cost)


def _finite(costs: dict[str, float]) -> dict[str, float]:
    """Costs that are numbers: a NaN would compare as neither cheaper nor dearer."""
    return {n: c for n, c in costs.items() if math.isfinite(c)}


def _slacks(obs: Observation, spec: Spec) -> tuple[dict[str, float], list[str]]:
    slacks, stale = {}, []
    for t in spec.targets:
        seen = obs.latency.get(t.name)
        if seen is None or obs.age.get(t.name, 0.0) > spec.stale_after:
            stale.append(t.name)
        else:
            slacks[t.name] = t.slack(seen)
    return slacks, stale


def _ahead(obs: Observation, spec: Spec) -> dict[str, float]:
    """The slack of the next request, per target whose accept queue and CPU per request
    are known: it is answered after those waiting and itself, each taking the target's
    cores that long (the queue drains at cores / service requests a second). Its latency
    percentile lags a queue by the requests in it: each is seen only once answered."""
    out = {}
    for t in spec.targets:
        queued, service = obs.queued.get(t.name), obs.service.get(t.name)
        if queued is None or service is None or not t.cpus or not math.isfinite(service):
            continue
        out[t.name] = t.slack((queued + 1) * service / len(t.cpus))
    return out


def _failed(state: LadderState, spec: Spec, now: float) -> int:
    """Tries answered by a climb in a row, once this climb is counted: one within
    probe_after of a try answers it; a try that held longer than that succeeded."""
    if not state.probed or spec.probe_after is None:
        return state.failed
    return state.failed + 1 if now - state.changed_at < spec.probe_after else 0


def _probe_wait(state: LadderState, spec: Spec) -> float | None:
    """How long a rung is held inside the band before trying one lower."""
    if spec.probe_after is None:
        return None
    return spec.probe_after * float(2 ** min(state.failed, PROBE_BACKOFF))


def _recovered(name: str, obs: Observation, spec: Spec) -> bool:
    """Whether the requests since the last rung change say the risk is over (hold)."""
    if name not in obs.recent:
        return False
    recent = obs.recent[name]
    target = next(t for t in spec.targets if t.name == name)
    return recent is None or target.slack(recent) >= spec.act_below


def _relaxed(target: Target, obs: Observation, spec: Spec, since_change: float) -> bool:
    """Whether the requests started since the last rung change were comfortable. Only
    answered ones are seen, each faster than the time since the change: before one SLO has
    passed, a slow request still running would be missing from them."""
    recent = obs.recent.get(target.name)
    if recent is None or since_change < target.slo:
        return False
    return target.slack(recent) > spec.relax_above


def _move(
    state: LadderState,
    by: int,
    direction: str,
    why: str,
    inputs: dict[str, Any],
    spec: Spec,
    rungs: list[str],
    now: float,
    worst: str | None,
) -> tuple[LadderState, list[Decision]]:
    level = max(floor(spec), min(len(rungs), state.level + by))
    loans = list(state.loans)
    lendable = _lendable(spec)
    n_loans = sum(1 for r in rungs[: max(level, 0)] if r.startswith("core-"))
    while len(loans) > n_loans:
        loans.pop()  # returned last lent, first
    while len(loans) < n_loans:
        loans.append((lendable[len(loans)], worst or spec.targets[0].name))
    new = LadderState(
        level,
        now,
        None,
        tuple(loans),
        ceiling=state.ceiling,
        ceiling_until=state.ceiling_until,
        ceiling_cost=state.ceiling_cost,
    )
    return new, [Decision(direction, level, rung_name(level, rungs), why, inputs)]


def _lendable(spec: Spec) -> list[int]:
    """Shared CPUs that can be lent, last first: while every lower workload keeps one, and
    no more than the largest target has (doubling it is as far as lending helps)."""
    exclusive = {c for t in spec.targets for c in t.cpus}
    lenders = [w for w in spec.lowers if policy(w.workload_class).lends_cores]
    shared = sorted({c for w in lenders for c in w.cpus} - exclusive, reverse=True)
    most = max((len(t.cpus) for t in spec.targets), default=0) or 1
    out: list[int] = []
    for core in shared:
        if len(out) < most and all(set(w.cpus) - {*out, core} for w in lenders):
            out.append(core)
    return out


@dataclass(frozen=True)
class Settings:
    """What the lower classes and the targets should have at a rung."""

    files: dict[str, dict[str, str]]  # workload -> cgroup file -> value
    frozen: frozenset[str]
    stopped: frozenset[str]
    # front -> (priorities held back, in-flight cap per replica)
    admission: dict[str, tuple[frozenset[str], int]] = field(default_factory=dict)
    egress: dict[str, int] = field(default_factory=dict)  # shaped lower -> ceiling, bits/s


def settings(state: LadderState, spec: Spec) -> Settings:
    """The cgroup values, freezes and stops that rung state.level means."""
    rungs = ladder(spec)[: max(state.level, 0)]
    shared = {c for t in spec.targets for c in t.cpus} if state.level < 0 else set()
    files: dict[str, dict[str, str]] = {}
    frozen: set[str] = set()
    stopped: set[str] = set()
    n_caps = sum(1 for r in rungs if r.startswith("cap-"))
    staggered, groups = cap_groups(spec)
    lent = {core for core, _ in state.loans}
    batch_cpus = {c for w in spec.lowers if w.workload_class == "batch" for c in w.cpus}
    for w in spec.lowers:
        f: dict[str, str] = {}
        cls = policy(w.workload_class)
        if w.weight is not None:
            cut = cls.weight_cut if "weight" in rungs else None
            f["cpu.weight"] = str(max(1, w.weight // cut) if cut else w.weight)
        cores = [c for c in w.cpus if c not in lent] or list(w.cpus)
        if w.workload_class in SHARED_CLASSES:
            cores = sorted({*cores, *shared})
        f["cpuset.cpus"] = _cpu_list(cores)
        if cls.capped:
            quota = w.cpu_max
            # the staggered class by its priority; a class below it at the lowest one's cap
            group = groups.index(w.priority) if w.workload_class == staggered else 0
            percent = _cap(n_caps, group) if n_caps else None
            if percent is not None:
                # background beside batch runs whenever batch leaves a CPU idle, so it would
                # take exactly the headroom batch's cap makes: it is held at its floor
                beside = w.workload_class == "background" and bool(set(w.cpus) & batch_cpus)
                cap = w.min_cpu if beside else max(w.min_cpu, len(cores) * percent / 100)
                quota = cap if quota is None else min(quota, cap)
            f["cpu.max"] = cpu_max(
                None if quota is None else cpu_quota(quota, spec.period), spec.period
            )
        files[w.name] = f
        if w.may_freeze and _acted(rungs, "freeze", w):
            frozen.add(w.name)
        if cls.stoppable and w.may_stop and _acted(rungs, "stop", w):
            stopped.add(w.name)
    for t in spec.targets:
        borrowed = [core for core, to in state.loans if to == t.name]
        files[t.name] = {"cpuset.cpus": _cpu_list([*t.cpus, *borrowed])}
    held = frozenset(r.removeprefix("hold-") for r in rungs if r.startswith("hold-"))
    cut = min((int(r[9:].rstrip("%")) for r in rungs if r.startswith("inflight-")), default=100)
    admission = {f.name: (held, max(1, f.inflight * cut // 100)) for f in spec.fronts}
    net = min((int(r[4:].rstrip("%")) for r in rungs if r.startswith("net-")), default=100)
    egress = {w.name: w.egress * net // 100 for w in spec.lowers if w.egress is not None}
    return Settings(files, frozenset(frozen), frozenset(stopped), admission, egress)


def _cpu_list(cpus: list[int]) -> str:
    return format_cpu_list(sorted(set(cpus)))
