"""The receiving end of pushed latencies: a unix datagram socket in nxrd's poll loop.

The sender's PID comes with each datagram (SO_PASSCRED), and a report counts only when
that process is in the cgroup of the workload it names: a workload reports its own latency,
and nothing else on the host can push nxr's controller around. A front (HAProxy) logs each
request here (front/requests.py): its lines count only from the front's cgroup, and only
for its own replicas.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nxrd.errors import NxrError
from nxrd.files import bind_unix
from nxrd.front import requests
from nxrd.model.replicas import group_of, is_front

_CREDS = struct.calcsize("3i")
MAX_DATAGRAM = 65536
# One drain takes at most this many datagrams and this long: a flood (from anyone: the
# socket is 0666) leaves the rest for the next drain instead of holding nxrd's loop.
DRAIN_DATAGRAMS = 1000
DRAIN_SECONDS = 0.02
# What the socket must be able to queue while nxrd's loop is busy: a front logs a line per
# request, and a line the queue has no room for is lost. systemd's value (it sets it at boot).
QUEUE = 512


@dataclass
class Drained:
    latencies: list[tuple[str, float]] = field(default_factory=list)  # (workload, seconds)
    requests: list[tuple[str, requests.LoggedRequest]] = field(default_factory=list)  # (front, ...)


class PushReceiver:
    def __init__(
        self,
        path: str,
        owner_of: Callable[[int], str | None],
        deepen: Callable[[int], int | None] = lambda n: None,
    ) -> None:
        """deepen(n) lets datagram sockets made from then on queue n, and says what the
        limit was if it raised it (Host.datagram_queue)."""
        self.path, self.owner_of = path, owner_of
        self.rejected = 0  # reports from a process outside the workload they name
        was = deepen(QUEUE)  # before the socket: the kernel reads the limit when it is made
        self.note: str | None = None  # what nxrd says of it, when it changed the host
        if was is not None:
            self.note = (
                f"raised net.unix.max_dgram_qlen from {was} to {QUEUE}, as systemd does at"
                f" boot: {path} queues that many lines while nxrd is busy"
            )
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            bind_unix(self.sock, path, 0o666)  # any workload user may send; the cgroup decides
        except OSError as e:
            self.sock.close()
            raise NxrError(f"cannot listen for latencies on {path}: {e.strerror or e}") from None
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> Drained:
        """Latencies and fronts' requests waiting on the socket from a process allowed to
        say them: at most DRAIN_DATAGRAMS datagrams or DRAIN_SECONDS, whichever comes
        first."""
        out = Drained()
        owners: dict[int, str | None] = {}  # one /proc lookup per sender and drain
        end = time.monotonic() + DRAIN_SECONDS
        for n in range(DRAIN_DATAGRAMS):
            if n % 64 == 63 and time.monotonic() > end:
                return out
            try:
                data, ancdata, _, _ = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS))
            except (BlockingIOError, InterruptedError):
                return out
            pid = next(
                (
                    struct.unpack("3i", d[:_CREDS])[0]
                    for level, kind, d in ancdata
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                ),
                None,
            )
            if pid and pid not in owners:
                owners[pid] = self.owner_of(pid)
            owner = owners.get(pid) if pid else None
            if owner is None:  # from no workload: dropped before anything is parsed
                self.rejected += 1
                continue
            if is_front(owner):
                self._requests(owner, data, out)
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                name, _, value = line.strip().partition(" ")
                try:
                    seconds = float(value)
                except ValueError:
                    continue
                # a latency is a finite, non-negative number of seconds (NaN would poison
                # every percentile of its window)
                if name != owner or not math.isfinite(seconds) or seconds < 0:
                    self.rejected += 1
                    continue
                out.latencies.append((name, seconds))
        return out

    def _requests(self, front: str, data: bytes, out: Drained) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            r = requests.parse(line)
            if r is None or (r.server is not None and group_of(r.server) != group_of(front)):
                self.rejected += 1
                continue
            out.requests.append((front, r))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
