"""What a front logs of each request: the line HAProxy writes and its reading.

HAProxy keeps no histogram (its `qtime` is a mean over the last 1024 requests), but it
logs every request: the frontend sends one line per request to nxrd's latency socket
(render.py), which accepts a front's lines only from processes in the front's cgroup
(controller/push.py). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

# What HAProxy writes per request (its log-format): a tag, the server (the replica's
# workload name, or <NOSRV> when no replica took it), the priority nxr gave it, the time in
# the queue (-1: never queued) and the time to the answer's last byte, both in ms, and the
# status sent.
TAG = "nxr-request"
LOG_FORMAT = f"{TAG} %s %[var(txn.priority)] %Tw %Ta %ST"
NO_SERVER = "<NOSRV>"
PRIORITIES = ("high", "normal", "low")


@dataclass(frozen=True)
class LoggedRequest:
    server: str | None  # the replica that answered; None: refused or dropped in the queue
    priority: str
    wait: float | None  # seconds in the queue; None: it never queued
    seconds: float  # from its arrival to the last byte of its answer
    status: int


def parse(line: str) -> LoggedRequest | None:
    """One logged request, or None for any other line (or a malformed one)."""
    fields = line.split()
    if len(fields) != 6 or fields[0] != TAG or fields[2] not in PRIORITIES:
        return None
    try:
        wait, total, status = int(fields[3]), int(fields[4]), int(fields[5])
    except ValueError:
        return None
    if total < 0 or wait < -1:
        return None  # HAProxy writes -1 for a time it never measured
    server = None if fields[1] == NO_SERVER else fields[1]
    queued = wait / 1000 if wait >= 0 else None
    return LoggedRequest(server, fields[2], queued, total / 1000, status)
