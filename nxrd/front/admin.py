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
from nxrd.model.paths import FRONT_HELD

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
        self._done(
            self.command(f"set server {backend}/{server} state {state}"), f"{server} {state}"
        )

    def hold(self, priority: str, held: bool) -> None:
        """Refuse (or admit again) requests of a priority: high, normal or low."""
        self.command(f"del map {FRONT_HELD} {priority}")  # never listed twice
        if held:
            self._done(self.command(f"add map {FRONT_HELD} {priority} 1"), f"hold {priority}")

    def set_inflight(self, backend: str, server: str, n: int) -> None:
        """A replica's in-flight cap, live (its server's maxconn)."""
        self._done(
            self.command(f"set maxconn server {backend}/{server} {n}"), f"{server} maxconn {n}"
        )

    def _done(self, answer: str, what: str) -> None:
        if answer.strip():  # HAProxy answers nothing when it did it
            raise FrontError(f"front refused {what}: {answer.strip().splitlines()[0]}")

    def worker(self) -> int:
        """The pid of the worker that answers (a reload starts a new one)."""
        for line in self.command("show info").splitlines():
            key, _, value = line.partition(":")
            if key == "Pid" and value.strip().isdigit():
                return int(value)
        raise FrontError(f"front at {self.path}: show info names no Pid")

    def counted(self, table: str) -> dict[str, int]:
        """`show table`: each key's http_req_cnt ("high" -> requests refused)."""
        out = {}
        for line in self.command(f"show table {table}").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "key" in fields and fields.get("http_req_cnt", "").isdigit():
                out[fields["key"]] = int(fields["http_req_cnt"])
        return out

    def stats(self) -> list[dict[str, str]]:
        """`show stat`: one row per frontend, backend and server, HAProxy's CSV columns
        (pxname, svname, scur, qcur, status, hrsp_4xx...)."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))


def figures(
    group: str, rows: list[dict[str, str]], shed: dict[str, int]
) -> dict[str, dict[str, object]]:
    """What status, top and metrics show, by workload name: the front's queue and its
    refusals, and each replica's requests in flight. HAProxy's counters start again from 0
    when its worker is replaced (a reload or a restart), as a Prometheus counter may."""

    def num(row: dict[str, str], key: str) -> int:
        value = row.get(key, "")
        return int(value) if value.isdigit() else 0

    mine = {r["svname"]: r for r in rows if r.get("pxname") == group}
    backend = mine.get("BACKEND", {})
    out: dict[str, dict[str, object]] = {
        f"{group}.front": {
            "queued": num(backend, "qcur"),
            "queued_max": num(backend, "qmax"),
            "admitted": num(backend, "stot"),
            "shed": sum(shed.values()),
            "shed_by_priority": dict(sorted(shed.items())),
            "late": num(backend, "econ"),
            "queue_seconds_avg": num(backend, "qtime") / 1000,
        }
    }
    for name, row in mine.items():
        if name not in ("BACKEND", "FRONTEND"):
            out[name] = {
                "inflight": num(row, "scur"),
                "requests": num(row, "stot"),
                "rotation": row.get("status", ""),
            }
    return out
