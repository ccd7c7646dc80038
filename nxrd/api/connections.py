"""One-request connections served from the daemon's loop by readiness, never waited on.

Each connection is a small state machine: read until the request is whole, then write the
answer. The loop asks which descriptors to watch (watched()), passes on what turned ready
(ready()), and drops connections past their one overall deadline (expire()). A client that
sends slowly, or never reads its answer, holds only its own connection. Both the control
API (unix socket) and the metrics endpoint (TCP) are served this way.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

# One request, read and answered, in all; a client past it is dropped unanswered.
REQUEST_DEADLINE = 2.0
# Connections waiting to be accepted: a burst of clients (or a local user opening them as
# fast as it can) must not find the queue full while the loop is busy; the kernel caps it
# at net.core.somaxconn (4096).
BACKLOG = 1024
MAX_CONNECTIONS = 256  # beyond this many at once, the one nearest its deadline goes first
MAX_REQUEST = (1 << 20) + 16384  # a whole request (head and body): past it, dropped


@dataclass(frozen=True)
class Peer:
    """Who is on the other end (unix sockets: SO_PEERCRED; TCP: unknown, -1)."""

    pid: int = -1
    uid: int = -1
    gid: int = -1
    groups: tuple[int, ...] | None = None  # supplementary groups (SO_PEERGROUPS)


# (the peer, what it sent so far) -> None while the request is not whole, else the complete
# HTTP answer and whether it is an error (the client may still be sending)
Respond = Callable[[Peer, bytes], tuple[bytes, bool] | None]


@dataclass
class _Conn:
    sock: socket.socket
    peer: Peer
    deadline: float
    data: bytes = b""  # what the client sent so far
    out: bytes | None = None  # the answer, while it is being written
    closing: bool = False  # an error answer was written: read what is left, then close


class Connections:
    def __init__(
        self,
        listening: socket.socket,
        respond: Respond,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock, self.respond, self.clock = listening, respond, clock
        self.sock.setblocking(False)
        self.conns: dict[int, _Conn] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def owns(self, fd: int) -> bool:
        return fd == self.sock.fileno() or fd in self.conns

    def watched(self) -> list[tuple[int, int]]:
        """(descriptor, poll events) to wait on: the listening socket and each connection."""
        out = [(self.sock.fileno(), select.POLLIN)]
        for fd, c in self.conns.items():
            out.append((fd, select.POLLOUT if c.out else select.POLLIN))
        return out

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.conns.values()), default=None)

    def ready(self, fd: int) -> None:
        """Move the connection (or the listening socket) fd along after poll said so."""
        if fd == self.sock.fileno():
            self._accept()
        elif fd in self.conns:
            self._step(fd)

    def expire(self, now: float) -> None:
        """Drop connections past their deadline: a slow client costs only itself."""
        for fd in [fd for fd, c in self.conns.items() if now >= c.deadline]:
            self._drop(fd)

    def serve_ready(self, timeout: float = REQUEST_DEADLINE) -> None:
        """Accept what waits and serve it to the end, here (for callers without the
        daemon's loop: tests, benchmarks), each connection still within its deadline."""
        self._accept()
        end = self.clock() + timeout
        while self.conns and self.clock() < end:
            poller = select.poll()
            for fd, ev in self.watched()[1:]:
                poller.register(fd, ev)
            for fd, _ in poller.poll(50):
                self._step(fd)
            self.expire(self.clock())

    def close(self) -> None:
        for fd in list(self.conns):
            self._drop(fd)
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors: that client's connect fails, not nxrd
            conn.setblocking(False)
            peer = Peer()
            if conn.family == socket.AF_UNIX:
                creds = conn.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                )
                pid, uid, gid = struct.unpack("3i", creds)
                peer = Peer(pid, uid, gid, _peer_groups(conn))
            if len(self.conns) >= MAX_CONNECTIONS:
                self._drop(min(self.conns, key=lambda fd: self.conns[fd].deadline))
            deadline = self.clock() + REQUEST_DEADLINE
            self.conns[conn.fileno()] = _Conn(conn, peer, deadline)

    def _step(self, fd: int) -> None:
        c = self.conns.get(fd)
        if c is None:
            return
        try:
            if c.out:
                sent = c.sock.send(c.out)
                c.out = c.out[sent:]
                if not c.out:
                    if not c.closing:
                        self._drop(fd)
                    else:  # an error answer: read what the client still sends, then close
                        c.sock.shutdown(socket.SHUT_WR)
                        c.out = None
                return
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        if not chunk or len(c.data) + len(chunk) > MAX_REQUEST:
            self._drop(fd)  # gone (or endless) before a whole request: nobody to answer
            return
        c.data += chunk
        if c.closing:
            return  # dropped without reading, the client's unread data would lose the answer
        answer = self.respond(c.peer, c.data)
        if answer is None:
            return  # the request is not whole yet
        c.out, c.closing = answer
        self._step(fd)  # most answers fit the socket's buffer: written at once

    def _drop(self, fd: int) -> None:
        c = self.conns.pop(fd, None)
        if c is not None:
            c.sock.close()


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; Python 3.11 lacks the name


def _peer_groups(conn: socket.socket) -> tuple[int, ...] | None:
    """The supplementary groups the connecting process holds now (not /etc/group's view:
    a member whose groups were dropped is not one, a process given one is)."""
    try:
        # 1024 bytes (256 groups) is the most Python's getsockopt takes; a caller holding
        # more gets ERANGE, and /etc/group's view instead.
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError:
        return None
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
