"""Exclusive cores kept clear of the rest of the machine, and given back.

While some workload has cores of its own, systemd's slices (AllowedCPUs=), device
interrupts, new interrupts, unbound kernel work and irqbalance are kept to the other
CPUs. What each had before is saved in <state-dir>/host.json before it is first changed
and stays there until it is given back: on nxrd's exit, when no exclusive core is left,
and by `nxrd restore-host` (the unit's ExecStopPost=, which runs after a crash too). A
restarted nxrd finds the originals there and keeps them, so a crash never makes nxr's own
values look like the machine's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nxrd.daemon.io_cost import IoCost
from nxrd.errors import KernelError
from nxrd.files import write_atomically
from nxrd.kernel.block import Disks
from nxrd.kernel.housekeeping import SLICES, HostCpus
from nxrd.model.plan import Plan
from nxrd.model.units import format_cpu_list, format_cpu_mask
from nxrd.plan.clear_cores import exclusive_cpus, housekeeping_cpus, irq_cpus, slices_kept_off
from nxrd.profile.model import Profile

FILE = "host.json"


class Isolation:
    def __init__(
        self,
        cpus: HostCpus,
        state_dir: Path,
        tree: str | None,
        say: Callable[[str], None],
        disks: Disks | None = None,
    ) -> None:
        self.cpus, self.path, self.tree, self.say = cpus, state_dir / FILE, tree, say
        self.io = None if disks is None else IoCost(disks, state_dir, say)
        self.applied: frozenset[int] = frozenset()

    def apply(self, plan: Plan, profile: Profile | None = None) -> None:
        """Keep the machine off this plan's exclusive cores (or give them back if it has
        none), and make the profile's I/O weights act (io_cost.py). Never fails: what
        cannot be done is said, the rest is done."""
        if self.io is not None and profile is not None:
            self.io.apply(profile)
        hk = housekeeping_cpus(plan)
        if hk == self.applied:
            return
        if not hk:
            self._give_back_cores()  # the I/O weights, if the profile sets them, stay acting
            return
        saved = load(self.path)
        cpus = format_cpu_list(hk)
        own = self.cpus.own_unit()
        # nxrd's own service too, unless nxr's tree is inside it (narrowing it would narrow
        # the workloads): its shims start there and move to their leaves, taking their cpuset
        names = SLICES if own is None or own in (self.tree or "").split("/") else (*SLICES, own)
        kept, skipped = slices_kept_off(names, self.tree, self.cpus.systemd())
        problems: list[str] = []
        # originals first, on disk before anything is changed
        slices = saved.setdefault("slices", {})
        for unit in kept:
            if unit not in slices:
                try:
                    slices[unit] = self.cpus.allowed_cpus(unit)
                except KernelError as e:
                    problems.append(str(e))
        irqs = saved.setdefault("irqs", {})
        for irq, now in self.cpus.irqs().items():
            irqs.setdefault(irq, now)
        for key, read in (
            ("default_irq", self.cpus.default_irq_mask),
            ("workqueue", self.cpus.workqueue_mask),
        ):
            if key not in saved and (value := read()) is not None:
                saved[key] = value
        sock = self.cpus.irqbalance()
        if sock is not None:
            saved["irqbalance"] = str(sock)
        write_atomically(self.path, json.dumps(saved, sort_keys=True))

        moved_slices = [
            unit
            for unit in kept
            if unit in slices and _quietly(problems, self.cpus.set_allowed_cpus, unit, cpus)
        ]
        moved, stuck = 0, []
        for irq, original in irqs.items():
            try:
                self.cpus.set_irq(irq, irq_cpus(original, hk))
                moved += 1
            except KernelError:
                stuck.append(irq)  # per-CPU and managed interrupts stay where they are
        if "default_irq" in saved:
            mask = format_cpu_mask(hk, saved["default_irq"])
            _quietly(problems, self.cpus.set_default_irq_mask, mask)
        if "workqueue" in saved:
            mask = format_cpu_mask(hk, saved["workqueue"])
            _quietly(problems, self.cpus.set_workqueue_mask, mask)
        exclusive = format_cpu_list(exclusive_cpus(plan))
        if sock is not None:
            _quietly(problems, self.cpus.ban_from_irqbalance, sock, exclusive)
        self.applied = hk
        what = [f"{', '.join(moved_slices)} (AllowedCPUs)"] if moved_slices else []
        what.append(f"{moved} interrupts")
        if "default_irq" in saved:
            what.append("new interrupts")
        if "workqueue" in saved:
            what.append("unbound workqueues")
        if sock is not None:
            what.append("irqbalance's balancing")
        line = f"exclusive cores {exclusive} kept clear: {', '.join(what)} on {cpus}"
        if stuck:
            more = ", ..." if len(stuck) > 8 else ""
            line += f"; {len(stuck)} interrupts the kernel keeps in place"
            line += f" ({', '.join(stuck[:8])}{more})"
        for why in dict.fromkeys(skipped.values()):
            units = ", ".join(u for u, w in skipped.items() if w == why)
            line += f"; not {units}: {why}"
        self.say(line)
        for p in problems:
            self.say(f"warning: isolation: {p}")

    def restore(self) -> None:
        """Give the machine back what it had (nothing to do when nothing is saved)."""
        if self.io is not None:
            self.io.restore()
        self._give_back_cores()

    def _give_back_cores(self) -> None:
        self.applied = frozenset()
        for p in give_back(self.cpus, self.path):
            self.say(f"warning: isolation: {p}")


def _quietly(problems: list[str], write: Callable[..., None], *args: Any) -> bool:
    """write(*args); what the kernel or systemd refused joins problems (False), and the
    rest goes on: one refusal never leaves the machine half moved or half given back."""
    try:
        write(*args)
    except KernelError as e:
        problems.append(str(e))
        return False
    return True


def inside(root: Path, mount: str | None) -> str | None:
    """nxr's subtree relative to the cgroup mount (None: outside it)."""
    if mount is None or not root.is_relative_to(mount):
        return None
    return str(root.relative_to(mount))


def load(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def give_back(cpus: HostCpus, path: Path) -> list[str]:
    """Write back what host.json saved, then remove it; the problems met (an interrupt
    gone since is none). Also `nxrd restore-host`."""
    saved = load(path)
    if not saved:
        return []
    problems: list[str] = []
    for unit, original in saved.get("slices", {}).items():
        _quietly(problems, cpus.set_allowed_cpus, unit, original)
    for irq, original in saved.get("irqs", {}).items():
        with contextlib.suppress(KernelError):  # gone, or the kernel kept it in place
            cpus.set_irq(irq, original)
    if "default_irq" in saved:
        _quietly(problems, cpus.set_default_irq_mask, saved["default_irq"])
    if "workqueue" in saved:
        _quietly(problems, cpus.set_workqueue_mask, saved["workqueue"])
    if "irqbalance" in saved and Path(saved["irqbalance"]).exists():
        _quietly(problems, cpus.ban_from_irqbalance, Path(saved["irqbalance"]), None)
    path.unlink(missing_ok=True)
    return problems
