"""HAProxy's runtime API on a front's stats socket: taking replicas out of rotation and
putting them back, and reading what the front counts.

One command per connection (HAProxy answers and closes), each under a short timeout: nxrd's
loop calls this, and a front that does not answer must not stall it.
"""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

from nxrd.errors import NxrError

STATES = ("ready", "drain", "maint")


class FrontError(NxrError):
    """The front's runtime API did not answer, or refused the command."""


class FrontAdmin:
    def __init__(self, path: Path, timeout: float = 0.5) -> None:
        self.path, self.timeout = path, timeout

    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError as e:
            raise FrontError(f"front at {self.path}: {e.strerror or e}") from None
        return b"".join(chunks).decode(errors="replace")

    def set_state(self, backend: str, server: str, state: str) -> None:
        """ready: in rotation; drain: no new requests, health checks go on; maint: out."""
        assert state in STATES
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:  # HAProxy answers nothing when it did it
            raise FrontError(f"front refused {server} {state}: {answer.splitlines()[0]}")

    def worker(self) -> int:
        """The pid of the worker that answers (a reload starts a new one)."""
        for line in self.command("show info").splitlines():
            key, _, value = line.partition(":")
            if key == "Pid" and value.strip().isdigit():
                return int(value)
        raise FrontError(f"front at {self.path}: show info names no Pid")

    def stats(self) -> list[dict[str, str]]:
        """`show stat`: one row per frontend, backend and server, HAProxy's CSV columns
        (pxname, svname, scur, qcur, status, hrsp_4xx...)."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))
