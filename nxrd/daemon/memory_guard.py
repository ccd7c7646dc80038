"""The memory guard: when the machine is about to run out of memory, kill a batch or
background workload before the kernel's OOM killer has to choose (docs/memory.md). The
decisions are nxrd/controller/victim.py's; this reads the machine's meminfo and memory.current,
and kills through the supervisor (cgroup.kill), one workload at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nxrd.controller.victim import (
    MemoryUser,
    Thresholds,
    describe,
    pick,
    short_of_memory,
    wait_before_next,
)
from nxrd.errors import KernelError
from nxrd.profile.model import MemoryGuardSettings
from nxrd.supervisor.states import State

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon

# After a kill, the victim's memory is freed as its processes exit, and MemAvailable
# shows it a moment later: no second victim until it has exited and SETTLE_MIN has passed,
# or SETTLE_MAX has (a victim stuck exiting).
SETTLE_MIN, SETTLE_MAX = 0.5, 2.0


class MemoryGuard:
    def __init__(self, d: Daemon) -> None:
        self.d = d  # its host, supervisor and tree; its profile's settings, as reloads change them
        self.next_at = 0.0
        self.killed: tuple[str, float] | None = None  # (victim, when) until it has exited
        self.told = False  # "nothing to kill" said once per shortage

    def settings(self) -> MemoryGuardSettings:
        return self.d.profile.host.memory_guard

    def step(self, now: float) -> None:
        s = self.settings()
        if not s.enabled or now < self.next_at:
            return
        thresholds = Thresholds(s.available, s.swap_free)
        info = self.d.host.meminfo()
        if not info:
            self.next_at = now + 1.0  # no meminfo: nothing to go by
            return
        self.next_at = now + wait_before_next(info, thresholds)
        why = short_of_memory(info, thresholds)
        if why is None:
            self.told = False
            return
        if self._settling(now):
            return
        candidates = self._candidates()
        chosen = pick(candidates)
        if chosen is None:
            if not self.told:
                self.d.say(f"short of memory ({why}); no batch or background workload to kill")
                self.told = True
            return
        if self.d.sup.kill(chosen.name, now, f"{why}; {describe(chosen, candidates)}"):
            self.killed = (chosen.name, now)

    def _settling(self, now: float) -> bool:
        if self.killed is None:
            return False
        name, at = self.killed
        rec = self.d.sup.records.get(name)
        running = rec is not None and rec.pid is not None and rec.killed_for is not None
        if now - at < SETTLE_MIN or (running and now - at < SETTLE_MAX):
            return True
        self.killed = None
        return False

    def _candidates(self) -> list[MemoryUser]:
        out = []
        for rec in self.d.sup.records.values():
            if rec.state not in (State.STARTING, State.READY) or rec.pid is None:
                continue
            try:
                current = int(self.d.fs.read(rec.plan.cgroup, "memory.current"))
            except (KernelError, ValueError):
                continue
            out.append(MemoryUser(rec.name, rec.spec.workload_class, rec.spec.priority, current))
        return out

    def wakeup(self, now: float) -> float:
        """Seconds until the guard wants to look again."""
        return max(0.0, self.next_at - now) if self.settings().enabled else 1.0
