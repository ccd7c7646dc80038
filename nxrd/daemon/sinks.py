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
            _text(f"{e.workload}: {e.old} -> {e.new} ({e.cause})"),
            PRIORITY=str(priority(e)),
            NXR_WORKLOAD=_text(e.workload),
            NXR_EVENT=_text(e.new),
            NXR_CAUSE=_text(e.cause),
            NXR_OLD_STATE=_text(e.old),
        )

    return send


def _print(e: Event) -> None:
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.time))
        + f".{int(e.time * 1000) % 1000:03d}"
    )
    line = _text(f"{stamp} {e.workload}: {e.old} -> {e.new} ({e.cause})")
    print(line, file=sys.stderr, flush=True)


# syslog levels (journalctl -p): what an operator must act on, what went wrong on its own,
# what is worth noticing, and the ordinary life of workloads
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6


def priority(e: Event) -> int:
    """The journal PRIORITY of an event."""
    if e.new == "failed" or e.cause.startswith(("reload failed", "workloads left on")):
        return ERR  # given up, or a profile or GPU an operator must fix
    if e.new == "quarantined" or e.cause.startswith("warning:"):
        return WARNING
    if e.new in ("exited", "backoff") and "exit code 0" not in e.cause:
        return WARNING  # it died: a signal, an OOM kill, a failing exit
    if e.workload in ("nxrd", "controller") or e.old == e.new:
        return NOTICE  # nxrd's own news, the controller's rungs, gpu_memory over budget
    return INFO


def _text(s: str) -> str:
    """What the journal and stderr can take: a lone surrogate (from a file name) becomes
    '?' instead of an exception that would end nxrd at every start."""
    return s.encode("utf-8", "replace").decode("utf-8")
