"""What wakes the daemon's loop between passes, and serving it while the loop waits:
signals, the API's connections, the metrics endpoint, latency reports, shims' pidfds."""

from __future__ import annotations

import contextlib
import math
import os
import select
from typing import TYPE_CHECKING

from nxrd.api.connections import Connections

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon


def poll_set(d: Daemon, wake_r: int, now: float) -> select.poll:
    """A fresh poll set each pass: a closed pidfd whose number was reused would otherwise
    stay silently unwatched."""
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    for server in servers(d):
        server.expire(now)  # a client past its deadline is dropped, not waited for
        for fd, events in server.watched():
            poller.register(fd, events)
    if d.push is not None:
        poller.register(d.push.fileno(), select.POLLIN)
    for fd in d.runtime.fds():
        poller.register(fd, select.POLLIN)
    return poller


def wait(
    d: Daemon, poller: select.poll, wake_r: int, now: float, until: float | None = None
) -> None:
    """Serve what arrives until the next timer is due (or until) or until something other
    than a latency report arrives. Reports come with every request a workload serves (tens
    a second): they only add samples, so they do not run the rest of the loop each time."""
    if until is None:
        until = now + min(
            d.sup.next_wakeup(now), d.controller.wakeup(now), d.memory_guard.wakeup(now), 1.0
        )
        for server in servers(d):
            if (due := server.next_deadline()) is not None:
                until = min(until, max(now, due))
    push = d.push
    push_fd = push.fileno() if push is not None else None
    clock = d.host.monotonic
    while True:
        # rounded up: a poll that ends a fraction of a millisecond early is a wasted pass
        ready = poller.poll(max(0, math.ceil((until - clock()) * 1000)))
        for fd, _ in ready:
            owner = next((s for s in servers(d) if s.owns(fd)), None)
            if owner is not None:
                owner.ready(fd)
            elif push is not None and fd == push_fd:
                drained, at = push.drain(), clock()
                for name, seconds in drained.latencies:
                    d.controller.push(name, seconds, at)
                for front, r in drained.requests:
                    d.rotation.logged(front, r, at)
                    if r.server is not None:
                        d.controller.served(r.server, r.seconds, at)
            elif fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
        if not ready or any(fd != push_fd for fd, _ in ready) or clock() >= until:
            return


def servers(d: Daemon) -> list[Connections]:
    """The API's and the metrics endpoint's connections, served by readiness."""
    return [d.api] if d.metrics is None else [d.api, d.metrics]
