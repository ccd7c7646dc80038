"""Client of the control API over its unix socket (what nxrctl uses)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlencode

from nxrd.errors import NxrError


class ApiCallError(NxrError):
    """nxrd answered with an error: its stable code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        # A unix socket with a timeout fails at once with EAGAIN while nxrd's listen queue
        # is full (a burst of clients, or someone flooding it): wait for room as a
        # blocking connect would, up to the timeout.
        deadline = time.monotonic() + (self.timeout or 0.0)
        while True:
            try:
                sock.connect(self.socket_path)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    sock.close()
                    raise
                time.sleep(0.01)
            except OSError:
                sock.close()
                raise
        self.sock = sock


class Client:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path, self.timeout = path, timeout

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer, or ApiCallError / NxrError."""
        q = {k: v for k, v in query.items() if v is not None}
        target = f"/v1/{path}" + (f"?{urlencode(q)}" if q else "")
        payload = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Length": str(len(payload)), "Content-Type": "application/json"}
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, target, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise NxrError(f"cannot reach nxrd at {self.path}: is it running?") from None
        except PermissionError:
            raise NxrError(
                f"permission denied on {self.path}: nxrctl needs root or the API group"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise NxrError(f"talking to nxrd at {self.path} failed: {e}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise NxrError(f"nxrd answered something that is not JSON ({resp.status})") from None
        if resp.status != 200:
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise ApiCallError(str(err.get("code", "internal")), str(err.get("message", "error")))
        if not isinstance(answer, dict):
            raise NxrError("nxrd answered an unexpected document")
        return answer
