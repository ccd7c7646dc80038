"""Egress shaping kept in step with the plan and the workloads (docs/network.md).

An event sink and a step in nxrd's loop (before the supervisor's, so that a workload's
first packets are already shaped), as the fronts' rotation. The HTB trees follow the plan:
built when the plan's shaping changes, kept when nxrd finds them as planned on start
(adopted after a crash, not built again). The nftables table follows the leaves: a rule for
each shaped workload whose leaf exists, loaded again whenever one starts (its leaf may be a
new cgroup) or stops. Every DRIFT_EVERY seconds what the kernel has is read back; a rule or a
tree that is not as nxr left it (removed by hand, a leaf created again behind nxr's back) is
put back, with an event. On nxrd's shutdown the table and the trees go.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.kernel.shaper import Shaped, Shaper
from nxrd.model.egress import DEFAULT, PARENT, Egress
from nxrd.model.plan import Plan
from nxrd.supervisor.events import Event
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Supervisor

DRIFT_EVERY = 5.0  # seconds between read-backs of the rules and trees
SATURATED = 0.9  # a link sending this share of its rate is full
RETRY = 5.0  # seconds before shaping the kernel refused is tried again
MOVES = (State.STARTING.value, State.STOPPED.value, State.EXITED.value, State.FAILED.value)


def leaves(
    fs: CgroupFS, root: Path, mount: str | None, plan: Callable[[], Plan]
) -> Callable[[str], str | None]:
    """A workload's leaf, relative to the cgroup2 mount (as nftables names it); None while
    it does not exist."""

    def leaf(name: str) -> str | None:
        rel = plan().workload(name).cgroup
        if not fs.exists(rel):
            return None
        path = root / rel
        base = mount or "/"
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    return leaf


def retunes(before: Egress, after: Egress) -> bool:
    """Whether only the classes' rates and ceilings differ (the same interfaces, the same
    workloads with the same minors and priorities)."""

    def shape(e: Egress) -> object:
        return (e.interfaces, [(c.workload, c.minor, c.priority) for c in e.classes])

    return shape(before) == shape(after)


def expected_trees(egress: Egress) -> dict[str, dict[int, tuple[int, int]]]:
    """Interface -> minor -> (rate, ceil) as planned."""
    out = {}
    for i in egress.interfaces:
        tree = {PARENT: (i.link, i.link), DEFAULT: (egress.default_rate(i.link), i.link)}
        out[i.name] = tree | {c.minor: (c.rate, c.ceil) for c in egress.classes}
    return out


def drift(egress: Egress, paths: dict[str, str], seen: Shaped) -> list[str]:
    """What differs between the plan and the kernel, one phrase each (nothing: in step)."""
    out = []
    for name, tree in expected_trees(egress).items():
        have = seen.trees.get(name)
        if have is None:
            out.append(f"no HTB tree on {name}")
        elif {m: (c.rate, c.ceil) for m, c in have.items()} != tree:
            out.append(f"the HTB classes on {name} are not as planned")
    marks = {c.workload: c.mark for c in egress.classes}
    wanted = {(w, p.strip("/"), marks[w]) for w, p in paths.items()}
    have_rules = {(m.workload, m.leaf, m.mark) for m in seen.rules or []}
    if seen.rules is None:
        out.append("no nftables table inet nxr")
    elif have_rules != wanted:
        out.append("the nftables rules are not as planned")
    return out


class EgressSync:
    def __init__(
        self,
        plan: Callable[[], Plan],
        sup: Supervisor,
        shaper: Shaper,
        leaf: Callable[[str], str | None],
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.sup, self.shaper, self.leaf, self.say = plan, sup, shaper, leaf, say
        self.built: Egress | None = None  # the shaping the trees were built (or found) for
        self.loaded: dict[str, str] | None = None  # workload -> leaf the rules were loaded for
        self.next_check = 0.0
        self.retry_at = 0.0
        self.failing: str | None = None  # the last error, said once
        self.limits: dict[str, int] = {}  # workload -> the controller's ceiling (bits/s)
        self.saturated = False  # whether a shaped link was full at the last sample
        self.figures: dict[str, dict[str, object]] = {}  # workload -> what status shows
        self.last: tuple[float, dict[str, int]] | None = None  # (when, workload -> bytes)

    def __call__(self, e: Event) -> None:
        if e.new in MOVES and self.loaded is not None and self._shaped(e.workload):
            self.loaded = None  # its leaf may be another cgroup now: load the rules again

    def limit(self, ceilings: dict[str, int]) -> None:
        """The controller's ceilings for shaped lower workloads (its net rungs); the
        planned ones where it gives none, and never above them. Applied at the next step,
        by changing the classes in place (no packet of theirs is dropped). A cut waits
        until a shaped link is full (SATURATED): bandwidth taken from batch work on a link
        with room to spare would give the latency-critical workload nothing. Once made, a
        cut holds until the controller gives the ceiling back, though the link it emptied
        is then no longer full."""
        egress = self.plan().egress
        planned = {c.workload: c.ceil for c in egress.classes} if egress else {}
        limits = {}
        for name, ceil in ceilings.items():
            current = self.limits.get(name, planned.get(name, ceil))
            limits[name] = current if ceil < current and not self.saturated else ceil
        self.limits = limits

    def wanted(self) -> Egress | None:
        """The plan's shaping, with the controller's ceilings."""
        egress = self.plan().egress
        if egress is None or not self.limits:
            return egress
        classes = []
        for c in egress.classes:
            ceil = min(c.ceil, self.limits.get(c.workload, c.ceil))
            classes.append(c.model_copy(update={"ceil": ceil, "rate": min(c.rate, ceil)}))
        return egress.model_copy(update={"classes": classes})

    def _shaped(self, name: str) -> bool:
        egress = self.plan().egress
        return egress is not None and any(c.workload == name for c in egress.classes)

    def paths(self, egress: Egress) -> dict[str, str]:
        """The leaves of the shaped workloads, where they exist: from the plan's apply on,
        before their processes start (a stop removes a leaf, a crash keeps it)."""
        out = {}
        for c in egress.classes:
            if c.workload in self.sup.records and (leaf := self.leaf(c.workload)) is not None:
                out[c.workload] = leaf
        return out

    def step(self, now: float) -> None:
        egress = self.wanted()
        if egress is None:
            if self.built is not None:
                self.try_(lambda: self.remove(), "egress shaping not removed")
            return
        if now < self.retry_at:
            return  # the kernel refused the last try: no nft run on every pass of the loop
        paths = self.paths(egress)
        try:
            if self.built is None:  # nxrd's start: adopt what is as planned
                seen = self.shaper.read([i.name for i in egress.interfaces])
                if not any("HTB" in d for d in drift(egress, paths, seen)):
                    self.built = egress
                if not drift(egress, paths, seen):
                    self.loaded = paths
            if self.built != egress and self.built is not None and retunes(self.built, egress):
                self.shaper.retune(egress)  # only ceilings moved: the classes changed in place
                self.built = egress
            elif self.built != egress:
                self.shaper.build(egress)
                self.built, self.loaded = egress, None
            if self.loaded != paths:
                self.shaper.mark(egress, paths)
                self.loaded = paths
            if now >= self.next_check:
                self.next_check = now + DRIFT_EVERY
                seen = self.shaper.read([i.name for i in egress.interfaces])
                found = drift(egress, paths, seen)
                if found:
                    self.say(f"egress shaping drifted ({'; '.join(found)}): put back as planned")
                    self.shaper.build(egress)
                    self.shaper.mark(egress, paths)
            self.failing = None
        except KernelError as e:
            self.built = self.loaded = None  # tried again, whole, after RETRY
            self.retry_at = now + RETRY
            if str(e) != self.failing:
                self.failing = str(e)
                self.say(f"warning: egress shaping: {e}")

    def sample(self, now: float) -> None:
        """Per shaped workload, once a second: its ceiling and floor, the bytes/s it sent
        (all shaped interfaces together) and the packets its queues dropped."""
        egress = self.wanted()
        if egress is None or self.built != egress:
            self.figures, self.last = {}, None
            return
        try:
            trees = self.shaper.trees([i.name for i in egress.interfaces])
        except KernelError:
            return
        sent: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for i in egress.interfaces:  # the whole link: its class counts every packet
            link = (trees.get(i.name) or {}).get(PARENT)
            sent[f"@{i.name}"] = link.sent if link is not None else 0
        for c in egress.classes:
            stats = [t[c.minor] for t in trees.values() if t is not None and c.minor in t]
            sent[c.workload] = sum(s.sent for s in stats)
            dropped[c.workload] = sum(s.dropped for s in stats)
        figures: dict[str, dict[str, object]] = {}
        for c in egress.classes:
            f: dict[str, object] = {"egress_bits": c.ceil, "guarantee_bits": c.rate}
            f |= {"sent_bytes": sent[c.workload], "dropped_packets": dropped[c.workload]}
            if self.last is not None and now > self.last[0]:
                before = self.last[1].get(c.workload, 0)
                if sent[c.workload] >= before:  # else the tree was built again since
                    f["tx_bytes_per_s"] = round((sent[c.workload] - before) / (now - self.last[0]))
            figures[c.workload] = f
        if self.last is not None and now > self.last[0]:
            then, earlier = self.last
            self.saturated = any(
                (sent[f"@{i.name}"] - earlier.get(f"@{i.name}", 0)) * 8 / (now - then)
                >= SATURATED * i.link
                for i in egress.interfaces
            )
        self.figures, self.last = figures, (now, sent)

    def signals(self) -> dict[str, dict[str, float]]:
        """Bytes/s each shaped workload sent (last second's sample), for the controller's
        decisions."""
        return {
            name: {"tx_bytes_per_s": float(rate)}
            for name, f in self.figures.items()
            if isinstance(rate := f.get("tx_bytes_per_s"), int)
        }

    def remove(self) -> None:
        """The table and the trees off the host (nxrd's shutdown, or no shaping planned)."""
        built = self.built or self.plan().egress
        if built is not None:
            self.shaper.remove([i.name for i in built.interfaces])
        self.built = self.loaded = None

    def try_(self, call: Callable[[], None], what: str) -> None:
        try:
            call()
        except KernelError as e:
            self.say(f"warning: {what}: {e}")
