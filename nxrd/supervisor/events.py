"""State-change events: a bounded in-memory log that readers can follow, plus sinks."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    seq: int
    time: float  # wall clock, seconds since the epoch
    workload: str
    old: str
    new: str
    cause: str  # why: "exit code 1", "oom", "operator", "pool slot free"...
    data: dict[str, Any] = field(default_factory=dict)  # a decision's inputs (controller)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EventLog:
    """The last `size` events, numbered so a follower can ask for what came after seq."""

    def __init__(self, size: int = 10000) -> None:
        self._events: deque[Event] = deque(maxlen=size)
        self._seq = 0
        self.sinks: list[Callable[[Event], None]] = []

    def record(
        self,
        time: float,
        workload: str,
        old: str,
        new: str,
        cause: str,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Append an event and hand it to every sink (the journal, the API's followers)."""
        self._seq += 1
        event = Event(self._seq, time, workload, old, new, cause, data or {})
        self._events.append(event)
        for sink in self.sinks:
            sink(event)
        return event

    def since(self, seq: int = 0, workload: str | None = None) -> list[Event]:
        """Events after seq, optionally of one workload only."""
        return [
            e for e in self._events if e.seq > seq and (workload is None or e.workload == workload)
        ]
