"""Right-sizing the memory of workloads with `right_size` (docs/memory.md): every interval,
their memory pressure and use read, the next memory.high written (memory_law.py). Run from
the controller's tick, with or without latency targets; given back (the planned
memory.high) when the controller lets go (nxrd exits, the profile changes), and started
afresh when a workload's process changes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from nxrd.controller.memory_law import next_high
from nxrd.controller.observe import pressure
from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.ledger import Ledger
from nxrd.model.units import format_size
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Supervisor


@dataclass
class Sized:
    pid: int
    at: float  # when last read
    stalled: float  # memory.pressure's some total then, microseconds
    high: int | None = None  # the memory.high last written (None: the planned one)


class RightSizing:
    def __init__(
        self, sup: Supervisor, fs: CgroupFS, ledger: Ledger, wall: Callable[[], float]
    ) -> None:
        self.sup, self.fs, self.ledger, self.wall = sup, fs, ledger, wall
        self.sized: dict[str, Sized] = {}

    def step(self, now: float) -> None:
        for rec in list(self.sup.records.values()):
            rs = rec.spec.right_size
            if rs is None or rec.pid is None or rec.state != State.READY or rec.frozen:
                if rec.pid is None:
                    self.sized.pop(rec.name, None)  # its leaf starts from the plan again
                continue
            held = self.sized.get(rec.name)
            if held is not None and held.pid == rec.pid and now - held.at < rs.interval:
                continue
            try:
                stalled = pressure(self.fs.read(rec.plan.cgroup, "memory.pressure"))
                current = int(self.fs.read(rec.plan.cgroup, "memory.current"))
            except (KernelError, ValueError):
                continue
            total = stalled.get("some_total_usec", 0.0)
            if held is None or held.pid != rec.pid:
                self.sized[rec.name] = Sized(rec.pid, now, total)
                continue
            share = (total - held.stalled) / 1e6 / (now - held.at)
            held.at, held.stalled = now, total
            cap = rec.plan.values.memory_high or rec.plan.values.memory_max
            high = next_high(held.high, current, share, rs.pressure / 100, rs.floor, cap)
            if high == held.high:
                continue
            why = "over" if share > rs.pressure / 100 else "under"
            cause = (
                f"right-size: memory pressure {share:.2%} {why} {rs.pressure / 100:.2%}, "
                f"using {format_size(current)}"
            )
            try:
                with self.ledger.because(cause):
                    self.fs.write(rec.plan.cgroup, "memory.high", str(high))
            except KernelError:
                continue
            held.high = high

    def high(self, name: str) -> int | None:
        """The memory.high right-sizing holds the workload at now (None: the planned one)."""
        held = self.sized.get(name)
        return None if held is None else held.high

    def release(self, why: str) -> None:
        """The planned memory.high back on every right-sized workload still running."""
        for name, held in list(self.sized.items()):
            rec = self.sup.records.get(name)
            if held.high is not None and rec is not None and rec.pid is not None:
                planned = rec.plan.values.memory_high
                value = "max" if planned is None else str(planned)
                with contextlib.suppress(KernelError), self.ledger.because(f"right-size: {why}"):
                    self.fs.write(rec.plan.cgroup, "memory.high", value)
        self.sized.clear()
