"""The control API's unix socket: requests parsed, authorized and answered; the
connections themselves are served by readiness from nxrd's loop (connections.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nxrd.api.connections import BACKLOG, Connections, Peer
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
from nxrd.files import bind_unix, shared_dir
from nxrd.kernel.host import Host, LinuxHost


class Answers(Protocol):
    """What answers the API's requests: nxrd's Handlers, or the node agent's."""

    def handle(self, req: Request) -> dict[str, Any]: ...


class Access:
    """Who may read, who may steer (root, nxrd's own user and one group) and who may
    change what runs (root and nxrd's own user)."""

    def __init__(self, group: str | None, read: str, host: Host | None = None) -> None:
        self.host = host or LinuxHost()
        self.read = read  # "all" or "group"
        self.gid = None if group is None else self.host.gid_of(group)

    def owner(self, req: Request) -> bool:
        return req.uid in (0, self.host.euid())

    def privileged(self, req: Request) -> bool:
        if self.owner(req):
            return True
        if self.gid is None:
            return False
        if req.groups is not None:  # what the caller's process holds, from the kernel
            return self.gid == req.gid or self.gid in req.groups
        return self.host.in_group(req.uid, req.gid, self.gid)

    def may_read(self, req: Request) -> bool:
        return self.read == "all" or self.privileged(req)


class ApiServer(Connections):
    def __init__(
        self,
        path: str,
        access: Access,
        handlers: Answers | None = None,
        on_error: Callable[[str], None] = lambda _m: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.handlers, self.access, self.on_error = path, handlers, access, on_error
        shared_dir(Path(path).parent)  # the API group must reach the socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of an nxrd that is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # 0660 with the API group: only it and root connect; 0666 when all may read.
            bind_unix(sock, path, 0o666 if access.read == "all" else 0o660)
            if access.gid is not None:
                os.lchown(path, -1, access.gid)  # the socket itself, never a link's target
            sock.listen(BACKLOG)
        except OSError as e:
            sock.close()
            raise NxrError(f"cannot listen on {path}: {e.strerror}") from None
        super().__init__(sock, self._respond, clock)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _respond(self, peer: Peer, data: bytes) -> tuple[bytes, bool] | None:
        try:
            request = _request(peer, data)
            if request is None:
                return None  # not whole yet
            status, body = 200, self._handle(request)
        except ApiError as e:
            status, body = e.status, e.body()
        except Exception as e:  # a bug must not take the daemon down
            self.on_error(f"API request failed: {type(e).__name__}: {e}")
            status, body = 500, ApiError("internal", "internal error; see nxrd's log").body()
        return response(status, body), status != 200

    def _handle(self, req: Request) -> dict[str, object]:
        if not self.access.may_read(req):
            raise ApiError("forbidden", f"uid {req.uid} may not use the API")
        if self.handlers is None:
            raise ApiError("conflict", "nxrd is still starting")
        return self.handlers.handle(req)


def _request(peer: Peer, data: bytes) -> Request | None:
    """The request in data, once whole (None until then)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ApiError("too_large", f"request head larger than {MAX_HEAD} bytes")
    if not sep:
        return None
    method, target, headers = parse_head(head)
    length = body_length(headers)
    if len(rest) < length:
        return None
    method, path, query = route(method, target)
    return Request(method, path, query, rest[:length], peer.uid, peer.gid, peer.pid, peer.groups)
