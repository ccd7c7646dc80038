"""I/O weights that act: where a profile sets io_weight, io.cost is turned on for every
disk on which neither io.cost nor BFQ would enforce it (docs/isolation.md), and turned
off again on exit (or by `nxrd restore-host` after a crash): the disks nxr turned on are
kept in <state-dir>/io.json until then."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.files import write_atomically
from nxrd.kernel.block import Disks
from nxrd.profile.model import Profile

FILE = "io.json"


class IoCost:
    def __init__(self, disks: Disks, state_dir: Path, say: Callable[[str], None]) -> None:
        self.disks, self.path, self.say = disks, state_dir / FILE, say

    def apply(self, profile: Profile) -> None:
        weighted = sorted(n for n, w in profile.workloads.items() if w.io_weight is not None)
        if not weighted:
            self.restore()
            return
        turned = _load(self.path)
        disks = self.disks.list()
        missing = [d for d in disks if d.enforced() is None]
        if not missing:
            return
        if any(d.iocost is None for d in missing):
            names = ", ".join(d.name for d in missing)
            self.say(
                f"warning: io_weight of {', '.join(weighted)} has no effect on {names}: "
                "no io.cost in this kernel and no BFQ scheduler there"
            )
            return
        done = []
        for d in missing:
            try:
                turned.append(d.devno)
                write_atomically(self.path, json.dumps(sorted(set(turned))))
                self.disks.set_iocost(d.devno, True)
                done.append(f"{d.name} ({d.devno}, {d.scheduler})")
            except KernelError as e:
                self.say(f"warning: io_weight: {d.name} ({d.devno}): {e}")
        if done:
            self.say(f"io.cost turned on for {', '.join(done)}: io_weight acts there now")

    def restore(self) -> None:
        for problem in give_back(self.disks, self.path):
            self.say(f"warning: io.cost: {problem}")


def _load(path: Path) -> list[str]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [d for d in saved if isinstance(d, str)] if isinstance(saved, list) else []


def give_back(disks: Disks, path: Path) -> list[str]:
    """io.cost off again where nxr turned it on; the problems met."""
    problems = []
    for devno in _load(path):
        try:
            disks.set_iocost(devno, False)
        except KernelError as e:
            problems.append(f"{devno}: {e}")
    path.unlink(missing_ok=True)
    return problems
