"""Report request latencies to nxrd, for workloads with `slo.source.push = true`.

Standard library only, so any Python server can use it without nxr's dependencies:

    from nxrd.latency import LatencyReporter
    report = LatencyReporter()          # the workload's name and socket come from nxrd
    ...
    report(time.perf_counter() - started)

Each call is one datagram; it never blocks and never raises (a missing nxrd must not
break the server). nxrd accepts a workload's reports only from processes in its cgroup.
"""

from __future__ import annotations

import contextlib
import os
import socket

DEFAULT_SOCKET = "/run/nxr/latency.sock"


class LatencyReporter:
    def __init__(self, workload: str | None = None, path: str | None = None) -> None:
        self.workload = workload or os.environ.get("NXR_WORKLOAD", "")
        self.path = path or os.environ.get("NXR_LATENCY_SOCKET", DEFAULT_SOCKET)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def __call__(self, seconds: float) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(f"{self.workload} {seconds:.6f}\n".encode(), self.path)

    def close(self) -> None:
        self.sock.close()
