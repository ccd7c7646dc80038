"""The wire protocol: request parsing, limits, error codes. Pure: bytes in, values out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

API_VERSION = "v1"
MAX_HEAD = 8192  # request line and headers
MAX_BODY = 1 << 20  # a profile being applied
DEFAULT_SOCKET = "/run/nxr/nxrd.sock"

# Stable error codes: clients branch on these, never on messages.
ERRORS = {
    "bad_request": 400,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "conflict": 409,
    "invalid_profile": 422,
    "internal": 500,
}


class ApiError(Exception):
    """An error the API answers with: a stable code and a one-line message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def status(self) -> int:
        return ERRORS[self.code]

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class Request:
    method: str
    path: tuple[str, ...]  # "/v1/workloads/chat/stop" -> ("workloads", "chat", "stop")
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    uid: int = -1  # peer credentials from SO_PEERCRED
    gid: int = -1
    pid: int = -1
    # the caller's supplementary groups as the kernel has them (SO_PEERGROUPS); None: unknown
    groups: tuple[int, ...] | None = None


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers of an HTTP/1.x request (without the body)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ApiError("bad_request", "request is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ApiError("bad_request", "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise ApiError("bad_request", "malformed header")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def body_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise ApiError("bad_request", "chunked bodies are not supported; send Content-Length")
    raw = headers.get("content-length", "0")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and not 5000 of them
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise ApiError("bad_request", "bad Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise ApiError("too_large", f"body larger than {MAX_BODY} bytes")
    return length


def route(method: str, target: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """('GET', '/v1/events?since=3') -> ('GET', ('events',), {'since': '3'})."""
    if method not in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"):
        raise ApiError("method_not_allowed", f"method {method[:20]!r} not allowed")
    url = urlsplit(target)
    parts = tuple(unquote(p) for p in url.path.split("/") if p)
    if not parts or parts[0] != API_VERSION:
        raise ApiError(
            "not_found", f"no such path {url.path[:100]!r} (paths start with /{API_VERSION}/)"
        )
    return method, parts[1:], dict(parse_qsl(url.query))


def response(status: int, body: dict[str, object]) -> bytes:
    """A complete HTTP/1.1 response; the connection closes after it."""
    payload = (json.dumps(body, sort_keys=True) + "\n").encode()
    reason = {200: "OK"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload
