"""One function per API command, over the supervisor's state. No sockets here."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nxrd.api.protocol import ApiError, Request
from nxrd.errors import NxrError, ProfileError
from nxrd.kernel.devices import gpu_node
from nxrd.model.plan import Plan
from nxrd.model.topology import Topology, device_minors
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import NotRunning, Record, Supervisor

MUTATIONS = ("start", "stop", "restart", "freeze", "thaw")
READS = ("logs", "explain")
LOG_CHUNK = 256 * 1024


class Rights(Protocol):
    """Who may do what (docs/security.md)."""

    def privileged(self, req: Request) -> bool:
        """May steer what root declared: start, stop, freeze, release a GPU."""

    def owner(self, req: Request) -> bool:
        """May change what runs and as whom (apply, reload): root and nxrd's own user
        only, since a profile names any command and any user, root included."""


class DaemonView(Protocol):
    """What the handlers need from the running nxrd beyond the supervisor's records."""

    def stats(self, rec: Record) -> dict[str, Any]:
        """Live figures of a workload's cgroup (memory, CPU %, pressure...)."""

    def explain(self, rec: Record) -> dict[str, Any]:
        """Requested, planned, written and effective value of each resource."""

    def log_file(self, name: str) -> Path: ...

    def reconfigure(
        self, files: list[tuple[str, str]] | None, dry_run: bool, who: str
    ) -> dict[str, Any]:
        """Apply a changed profile (files None: re-read the configured one)."""

    def release_gpu(self, index: int, who: str) -> dict[str, Any]:
        """Lift a GPU's quarantine."""


def workload_status(rec: Record, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `nxrctl status` shows for one workload."""
    slo = rec.spec.slo
    out: dict[str, Any] = {
        "name": rec.name,
        "class": rec.plan.workload_class,
        "state": rec.state.value,
        "frozen": rec.frozen,
        "frozen_by": rec.frozen_by,
        "reason": rec.reason,
        "pid": rec.pid,
        "cpus": rec.plan.cpus,
        "memory_max": rec.plan.values.memory_max,
        "gpus": [g.index for g in rec.plan.gpus],
        "restarts": rec.restarts,
        "last_exit": rec.last_exit,
        "pool": rec.spec.pool,
        "cgroup": rec.plan.cgroup,
        "slo_percentile": None if slo is None else slo.target[0],
        "slo_seconds": None if slo is None else slo.target[1],
        "latency_seconds": None,  # observed, once a latency source reports (controller)
    }
    out.update(stats or {})
    return out


class Handlers:
    """Routes a parsed request to the command it names."""

    def __init__(
        self,
        sup: Supervisor,
        plan: Plan,
        topology: Topology,
        rights: Rights,
        daemon: DaemonView | None = None,
        clock: Callable[[], float] = time.monotonic,
        gpus: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.sup, self.plan, self.topology = sup, plan, topology
        self.rights, self.daemon, self.clock = rights, daemon, clock
        self.gpus = gpus  # per-GPU use outside the workloads; None: nxrd accounts no GPUs

    def handle(self, req: Request) -> dict[str, Any]:
        """The response body for req; raises ApiError for anything else."""
        p = req.path
        if req.method == "GET":
            if p == ("workloads",):
                body = {"workloads": [self._status(r) for r in list(self.sup.records.values())]}
                if self.gpus is not None:
                    body["gpus"] = self.gpus()
                return body
            if len(p) == 2 and p[0] == "workloads":
                return self._show(self._record(p[1]))
            if len(p) == 3 and p[0] == "workloads" and p[2] == "logs":
                rec = self._record(p[1])
                # Not for every reader (--api-read all): a log holds whatever the workload
                # printed, tokens included, which is why its file is root's only.
                if not self.rights.privileged(req):
                    raise ApiError(
                        "forbidden", f"uid {req.uid} may not read logs (root or the API group)"
                    )
                return self._logs(rec, req)
            if len(p) == 3 and p[0] == "workloads" and p[2] == "explain":
                return self._explain(self._record(p[1]))
            if p == ("events",):
                return self._events(req)
            if p == ("plan",):
                return self.plan.model_dump(mode="json", by_alias=True)
            if p == ("host",):
                return self.topology.model_dump(mode="json")
        elif req.method == "POST" and len(p) == 3 and p[0] == "workloads" and p[2] in MUTATIONS:
            recs = self._replicas(p[1]) or [self._record(p[1])]
            if not self.rights.privileged(req):
                raise ApiError(
                    "forbidden", f"uid {req.uid} may not {p[2]} workloads (root or the API group)"
                )
            now = self.clock()
            if p[2] == "restart" and len(recs) > 1:
                # its replicas one at a time, each once the one before is ready: it serves on
                self.sup.roll([r.name for r in recs], now)
                return {"workloads": [self._status(r) for r in recs]}
            done = []
            for rec in recs:  # a replicated workload's name stands for all its replicas
                try:
                    getattr(self.sup, p[2])(rec.name, now)
                except NotRunning as e:
                    if len(recs) == 1:
                        raise ApiError("conflict", str(e)) from None
                done.append(self._status(rec))
            return {"workload": done[0]} if len(recs) == 1 else {"workloads": done}
        elif req.method == "POST" and p in (("apply",), ("reload",)):
            return self._reconfigure(req, p[0])
        elif req.method == "POST" and len(p) == 3 and p[0] == "gpus" and p[2] == "release":
            return self._release(req, p[1])
        if self._known(p):
            raise ApiError("method_not_allowed", f"{req.method} not allowed on /v1/{'/'.join(p)}")
        raise ApiError("not_found", f"no such path /v1/{'/'.join(p)[:100]}")

    def _release(self, req: Request, index: str) -> dict[str, Any]:
        if not _INTEGER.fullmatch(index) or index.startswith("-"):
            raise ApiError("bad_request", f"a GPU is given by its index (got {index[:20]!r})")
        if not self.rights.privileged(req):
            raise ApiError(
                "forbidden", f"uid {req.uid} may not release GPUs (root or the API group)"
            )
        try:
            return self._need_daemon().release_gpu(int(index), f"uid {req.uid}")
        except NxrError as e:
            raise ApiError("conflict", str(e)) from None

    def _known(self, p: tuple[str, ...]) -> bool:
        top = (("workloads",), ("events",), ("plan",), ("host",), ("apply",), ("reload",))
        if len(p) == 3 and p[0] == "gpus" and p[2] == "release":
            return True
        return p in top or (
            p[:1] == ("workloads",) and (len(p) == 2 or (len(p) == 3 and p[2] in MUTATIONS + READS))
        )

    def _need_daemon(self) -> DaemonView:
        if self.daemon is None:
            raise ApiError("conflict", "not available in this nxrd")
        return self.daemon

    def _reconfigure(self, req: Request, verb: str) -> dict[str, Any]:
        dry_run = req.query.get("dry_run", "0") == "1"
        # a dry run too: its changes carry the old and new values of env (tokens, passwords)
        if not self.rights.owner(req):
            also = ", not even as a dry run" if dry_run else ""
            raise ApiError(
                "forbidden",
                f"uid {req.uid} may not {verb} profiles{also}: only root may, since a"
                " profile runs any command as any user",
            )
        files = _profile_files(req.body) if verb == "apply" else None
        try:
            return self._need_daemon().reconfigure(files, dry_run, f"uid {req.uid}")
        except ProfileError as e:
            raise ApiError("invalid_profile", "; ".join(e.lines())) from None
        except NxrError as e:
            raise ApiError("conflict", f"nothing changed: {e}") from None

    def _record(self, name: str) -> Record:
        rec = self.sup.records.get(name)
        if rec is None:
            if replicas := self._replicas(name):
                named = ", ".join(r.name for r in replicas)
                raise ApiError("not_found", f"{name!r} runs as replicas: name one of {named}")
            raise ApiError("not_found", f"no workload named {name[:64]!r}")
        return rec

    def _replicas(self, name: str) -> list[Record]:
        if name in self.sup.records:
            return []
        return [r for r in self.sup.records.values() if r.plan.replica_of == name]

    def _status(self, rec: Record) -> dict[str, Any]:
        return workload_status(rec, self.daemon.stats(rec) if self.daemon else None)

    def _show(self, rec: Record) -> dict[str, Any]:
        out = self._status(rec)
        out.update(
            files=rec.plan.files,
            env=rec.plan.env,
            notes=rec.plan.notes,
            command=list(rec.spec.command),
            threads=rec.plan.threads,
        )
        return out

    def _explain(self, rec: Record) -> dict[str, Any]:
        minors = device_minors(self.topology.gpus)
        out = {
            "name": rec.name,
            "class": rec.plan.workload_class,
            "cgroup": rec.plan.cgroup,
            "state": rec.state.value,
            "gpus": {
                "profile": rec.spec.gpus,
                "planned": [g.uuid for g in rec.plan.gpus],
                "env": {k: v for k, v in rec.plan.env.items() if k.endswith("VISIBLE_DEVICES")},
                # What the leaf's device filter lets it open; None: no filter (no GPUs here).
                "devices": [gpu_node(minors.get(g.uuid, g.index)) for g in rec.plan.gpus]
                if self.topology.gpus
                else None,
            },
            "threads": {"profile": rec.spec.threads, "planned": rec.plan.threads},
        }
        out.update(self._need_daemon().explain(rec))
        return out

    def _logs(self, rec: Record, req: Request) -> dict[str, Any]:
        """A chunk of the workload's log file from offset (negative: from the end)."""
        raw = req.query.get("offset", "0")
        if not _INTEGER.fullmatch(raw):
            raise ApiError("bad_request", "offset must be an integer")
        path = self._need_daemon().log_file(rec.name)
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                offset = int(raw)
                offset = max(0, size + offset) if offset < 0 else offset
                if offset > size:
                    offset = 0  # the log was rotated since: start over in the new file
                f.seek(offset)
                data = f.read(LOG_CHUNK)
        except FileNotFoundError:
            return {"text": "", "offset": 0, "size": 0}
        except OSError as e:
            raise ApiError("conflict", f"cannot read {path}: {e.strerror}") from None
        return {
            "text": data.decode("utf-8", "replace"),
            "offset": offset + len(data),
            "size": size,
        }

    def _events(self, req: Request) -> dict[str, Any]:
        return events_body(self.sup.events, req)


def events_body(log: EventLog, req: Request) -> dict[str, Any]:
    """GET /v1/events?since=SEQ[&workload=NAME]: what came after SEQ."""
    since = req.query.get("since", "0")
    if not _INTEGER.fullmatch(since) or since.startswith("-"):
        raise ApiError("bad_request", "since must be a non-negative integer")
    events = log.since(int(since), req.query.get("workload"))
    last = events[-1].seq if events else int(since)
    return {"events": [e.to_dict() for e in events], "last": last}


# ASCII digits, at most 18 ("²" and "٣" are digits to str.isdigit, not to int)
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _profile_files(body: bytes) -> list[tuple[str, str]]:
    """{"files": [{"name": ..., "text": ...}, ...]} -> [(name, text), ...]."""
    try:
        doc = json.loads(body)
        files = [(f["name"], f["text"]) for f in doc["files"]]
    except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: [[[[...
        raise ApiError(
            "bad_request", 'body must be {"files": [{"name": ..., "text": ...}]}'
        ) from None
    if not files or not all(isinstance(n, str) and isinstance(t, str) for n, t in files):
        raise ApiError("bad_request", "files must be a non-empty list of names and TOML texts")
    for name, text in files:
        # kept in applied.json and said in events: a name the journal cannot take (a lone
        # surrogate) made every later start of nxrd fail
        if not _clean(name, newlines=False) or len(name) > 255 or not _clean(text):
            raise ApiError(
                "bad_request", f"file names and texts must be UTF-8 text (name {name[:64]!r})"
            )
    return files


def _clean(text: str, newlines: bool = True) -> bool:
    """Encodable as UTF-8, and no control characters but tabs (and newlines)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    allowed = "\t\n\r" if newlines else "\t"
    return not any(ord(c) < 32 and c not in allowed for c in text)
