"""Report request latencies to nxrd, for workloads with `slo.source.push = true`.

Standard library only, so any Python server can use it without nxr's dependencies:

    from nxrd.latency import LatencyReporter
    report = LatencyReporter()          # the workload's name and socket come from nxrd
    ...
    report(time.perf_counter() - started)

Reports go out together, at most one datagram per `every` seconds (50 ms): a server
answering thousands of requests a second must not wake nxrd thousands of times. A report
made after a quiet spell goes at once; one made sooner waits for the next report (or
close()). Calls never block and never raise (a missing nxrd must not break the server),
and may come from any thread. nxrd accepts a workload's reports only from processes in its
cgroup.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

DEFAULT_SOCKET = "/run/nxr/latency.sock"
EVERY = 0.05  # seconds between datagrams: well inside any controller tick (250 ms and up)
MAX_LINES = 1000  # ~20 KB, far under a datagram's limit


class LatencyReporter:
    def __init__(
        self,
        workload: str | None = None,
        path: str | None = None,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workload = workload or os.environ.get("NXR_WORKLOAD", "")
        self.path = path or os.environ.get("NXR_LATENCY_SOCKET", DEFAULT_SOCKET)
        self.every, self.clock = every, clock
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._sent = float("-inf")

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self._lines.append(f"{self.workload} {seconds:.6f}\n")
            now = self.clock()
            if now - self._sent >= self.every or len(self._lines) >= MAX_LINES:
                self._send(now)

    def _send(self, now: float) -> None:
        data, self._lines, self._sent = "".join(self._lines).encode(), [], now
        with contextlib.suppress(OSError):
            self.sock.sendto(data, self.path)

    def close(self) -> None:
        """Send what is waiting, then close the socket."""
        with self._lock:
            if self._lines:
                self._send(self.clock())
        self.sock.close()
