"""The unix-socket server, served from the daemon's loop without ever waiting on a client.

Every connection is a small state machine (read the request, write the answer) driven by
poll readiness: the loop asks which descriptors to watch (watched()), passes on what
turned ready (ready()), and drops connections past their one overall deadline (expire()).
A client that sends slowly, or never reads its answer, holds only its own connection.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nxrd.api.handlers import Handlers
from nxrd.api.protocol import (
    MAX_HEAD,
    ApiError,
    Request,
    body_length,
    parse_head,
    response,
    route,
)
from nxrd.errors import NxrError
from nxrd.kernel.host import Host, LinuxHost

# One request, read and answered, in all; a client past it is dropped.
REQUEST_DEADLINE = 2.0
MAX_CONNECTIONS = 256  # beyond this many at once, the one nearest its deadline goes first


class Access:
    """Who may read and who may change: root, nxrd's own user and one group."""

    def __init__(self, group: str | None, read: str, host: Host | None = None) -> None:
        self.host = host or LinuxHost()
        self.read = read  # "all" or "group"
        self.gid = None if group is None else self.host.gid_of(group)

    def privileged(self, req: Request) -> bool:
        if req.uid in (0, self.host.euid()):
            return True
        if self.gid is None:
            return False
        return self.host.in_group(req.uid, req.gid, self.gid)

    def may_read(self, req: Request) -> bool:
        return self.read == "all" or self.privileged(req)


@dataclass
class _Conn:
    sock: socket.socket
    pid: int
    uid: int
    gid: int
    deadline: float
    data: bytes = b""  # what the client sent so far
    out: bytes | None = None  # the answer, while it is being written
    closing: bool = False  # an error answer was written: read what is left, then close


class ApiServer:
    def __init__(
        self,
        path: str,
        access: Access,
        handlers: Handlers | None = None,
        on_error: Callable[[str], None] = lambda _m: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.handlers, self.access, self.on_error = path, handlers, access, on_error
        self.clock = clock
        self.conns: dict[int, _Conn] = {}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of an nxrd that is gone
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
            # 0660 with the API group: only it and root connect; 0666 when all may read.
            os.chmod(path, 0o666 if access.read == "all" else 0o660)
            if access.gid is not None:
                os.chown(path, -1, access.gid)
            self.sock.listen(64)
        except OSError as e:
            self.sock.close()
            raise NxrError(f"cannot listen on {path}: {e.strerror}") from None
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        for fd in list(self.conns):
            self._drop(fd)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- what the daemon's loop drives

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

    # -- the connections

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors: that client's connect fails, not nxrd
            conn.setblocking(False)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("3i", creds)
            if len(self.conns) >= MAX_CONNECTIONS:
                self._drop(min(self.conns, key=lambda fd: self.conns[fd].deadline))
            deadline = self.clock() + REQUEST_DEADLINE
            self.conns[conn.fileno()] = _Conn(conn, pid, uid, gid, deadline)

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
        if c.closing:
            # dropped without reading would reset the connection and lose the answer
            if not chunk or len(c.data) > 1 << 20:
                self._drop(fd)
            else:
                c.data += chunk
            return
        if not chunk:
            self._drop(fd)  # gone before a whole request: nobody to answer
            return
        c.data += chunk
        status, body = self._answer(c)
        if status is None:
            return  # the request is not whole yet
        c.out, c.data = response(status, body), b""
        c.closing = status != 200
        self._step(fd)  # most answers fit the socket's buffer: written at once

    def _answer(self, c: _Conn) -> tuple[int | None, dict[str, object]]:
        """(status, body) once the request is whole; (None, {}) until then."""
        try:
            request = self._request(c)
            if request is None:
                return None, {}
            return 200, self._handle(request)
        except ApiError as e:
            return e.status, e.body()
        except Exception as e:  # a bug must not take the daemon down
            self.on_error(f"API request failed: {type(e).__name__}: {e}")
            return 500, ApiError("internal", "internal error; see nxrd's log").body()

    def _request(self, c: _Conn) -> Request | None:
        head, sep, rest = c.data.partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise ApiError("too_large", f"request head larger than {MAX_HEAD} bytes")
        if not sep:
            return None
        method, target, headers = parse_head(head)
        length = body_length(headers)
        if len(rest) < length:
            return None
        method, path, query = route(method, target)
        return Request(method, path, query, rest[:length], uid=c.uid, gid=c.gid, pid=c.pid)

    def _handle(self, req: Request) -> dict[str, object]:
        if not self.access.may_read(req):
            raise ApiError("forbidden", f"uid {req.uid} may not use the API")
        if self.handlers is None:
            raise ApiError("conflict", "nxrd is still starting")
        return self.handlers.handle(req)

    def _drop(self, fd: int) -> None:
        c = self.conns.pop(fd, None)
        if c is not None:
            c.sock.close()
