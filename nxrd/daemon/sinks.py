"""Where nxrd's events go besides its in-memory log: the journal, with fields, under
systemd; stderr, one timestamped line each, elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from nxrd.supervisor.events import Event


def sink(journal: Callable[..., None] | None) -> Callable[[Event], None]:
    """The event sink for this host: journal.send when journald runs, else stderr."""
    if journal is None:
        return _print

    def send(e: Event) -> None:
        journal(
            f"{e.workload}: {e.old} -> {e.new} ({e.cause})",
            NXR_WORKLOAD=e.workload,
            NXR_EVENT=e.new,
            NXR_CAUSE=e.cause,
            NXR_OLD_STATE=e.old,
        )

    return send


def _print(e: Event) -> None:
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.time))
        + f".{int(e.time * 1000) % 1000:03d}"
    )
    print(f"{stamp} {e.workload}: {e.old} -> {e.new} ({e.cause})", file=sys.stderr, flush=True)
