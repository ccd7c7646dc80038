"""Who last changed each cgroup value and why, for `nxrctl explain`.

The kernel keeps only the value; operators asking "why is this workload capped?" need the
writer and the reason too (the profile at start, an apply, a reload, the controller). Kept
in the state directory, so a restarted nxrd still knows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from nxrd.files import write_atomically


@dataclass(frozen=True)
class Write:
    value: str
    by: str  # "profile p.toml, at nxrd start", "nxrctl apply by uid 0 (p.toml)", ...
    time: float


class Ledger:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cause = "nxrd"
        self.last: dict[tuple[str, str], Write] = {}
        self.dirty = False

    def record(self, rel: str, filename: str, value: str) -> None:
        """A value written; writing the value already there changes nothing, keeps its why."""
        old = self.last.get((rel, filename))
        if old is None or old.value != value:
            self.last[(rel, filename)] = Write(value, self.cause, self.clock())
            self.dirty = True

    @contextlib.contextmanager
    def because(self, cause: str) -> Iterator[None]:
        """Writes made inside are attributed to cause."""
        old, self.cause = self.cause, cause
        try:
            yield
        finally:
            self.cause = old

    def of(self, rel: str) -> dict[str, Write]:
        return {f: w for (r, f), w in self.last.items() if r == rel}

    def save(self, path: Path) -> None:
        if not self.dirty:
            return
        rows = [[r, f, asdict(w)] for (r, f), w in sorted(self.last.items())]
        write_atomically(path, json.dumps(rows))
        self.dirty = False

    def load(self, path: Path) -> None:
        """What an earlier nxrd recorded; a missing or damaged file is an empty ledger."""
        try:
            rows = json.loads(path.read_text())
            self.last = {(str(r), str(f)): Write(**w) for r, f, w in rows}
        except (OSError, ValueError, TypeError):
            self.last = {}
