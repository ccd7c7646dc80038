"""The unix-socket server: accepts in the daemon's loop, one short request per connection.

Requests are tiny and local, so each is served to completion with a short timeout: the
single-threaded loop stays simple, and a stuck client costs at most CLIENT_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable
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

CLIENT_TIMEOUT = 1.0


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


class ApiServer:
    def __init__(
        self,
        path: str,
        access: Access,
        handlers: Handlers | None = None,
        on_error: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.path, self.handlers, self.access, self.on_error = path, handlers, access, on_error
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
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def serve_ready(self) -> None:
        """Serve every connection waiting to be accepted."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        pid, uid, gid = struct.unpack(
            "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
        try:
            status, body = 200, self._answer(conn, pid, uid, gid)
        except ApiError as e:
            status, body = e.status, e.body()
        except (TimeoutError, OSError):
            return  # the client went away or stalled: nothing to answer
        except Exception as e:  # a bug must not take the daemon down
            self.on_error(f"API request failed: {type(e).__name__}: {e}")
            status, body = 500, ApiError("internal", "internal error; see nxrd's log").body()
        with contextlib.suppress(OSError):
            conn.sendall(response(status, body))
            if status != 200:
                _drain(conn)

    def _answer(self, conn: socket.socket, pid: int, uid: int, gid: int) -> dict[str, object]:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                raise ApiError("too_large", f"request head larger than {MAX_HEAD} bytes")
            chunk = conn.recv(4096)
            if not chunk:
                raise ApiError("bad_request", "incomplete request")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise ApiError("too_large", f"request head larger than {MAX_HEAD} bytes")
        method, target, headers = parse_head(head)
        length = body_length(headers)
        body = rest
        while len(body) < length:
            chunk = conn.recv(min(65536, length - len(body)))
            if not chunk:
                raise ApiError("bad_request", "incomplete body")
            body += chunk
        method, path, query = route(method, target)
        req = Request(method, path, query, body[:length], uid=uid, gid=gid, pid=pid)
        if not self.access.may_read(req):
            raise ApiError("forbidden", f"uid {uid} may not use the API")
        if self.handlers is None:
            raise ApiError("conflict", "nxrd is still starting")
        return self.handlers.handle(req)


def _drain(conn: socket.socket, limit: int = 1 << 20) -> None:
    """Read (and drop) what the client already sent, so closing does not reset the
    connection and discard the error answer before the client reads it."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(0.2)
    total = 0
    with contextlib.suppress(OSError):
        while total < limit:
            chunk = conn.recv(65536)
            if not chunk:
                return
            total += len(chunk)
