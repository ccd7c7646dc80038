"""Who last wrote each cgroup value and why, for `nxrctl explain`.

The kernel keeps only the value; operators asking "why is this workload capped?" need the
writer and the reason too (the profile at start, an apply, a reload, the controller).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Write:
    value: str
    by: str  # "profile at start", "nxrctl apply by uid 0", "controller: ...", ...
    time: float


class Ledger:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cause = "nxrd"
        self.last: dict[tuple[str, str], Write] = {}

    def record(self, rel: str, filename: str, value: str) -> None:
        self.last[(rel, filename)] = Write(value, self.cause, self.clock())

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
