"""Adoption: what a previous nxrd left running is taken over, not started twice.

decide() is pure: the state file's entries, the plan's leaves and launch keys, and what the
kernel shows of each leaf (the shim's record, the processes in it) in; one action per
workload out. execute() carries them out through the supervisor and the runtime.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxrd.errors import KernelError
from nxrd.supervisor.states import State

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon

RUNNING = (State.STARTING.value, State.READY.value, State.STOPPING.value)


@dataclass(frozen=True)
class Planned:
    cgroup: str
    launch: str  # the launch key: what a restart would change


@dataclass(frozen=True)
class Seen:
    status: Mapping[str, object]  # the shim's record ({} when there is none)
    procs: tuple[int, ...]  # processes in the leaf
    frozen: bool = False  # the leaf's cgroup.freeze


@dataclass(frozen=True)
class Restore:
    """A stopped or failed workload keeps its state, reason and hold across the restart."""

    name: str
    state: str
    reason: str
    stop_cause: str | None
    held: bool


@dataclass(frozen=True)
class Remove:
    """Gone from the profile, or moved to another class: its old leaf must go."""

    name: str
    cgroup: str


@dataclass(frozen=True)
class Clear:
    """Recorded as running, but the kernel does not confirm it: kill what is left."""

    name: str


@dataclass(frozen=True)
class Adopt:
    name: str
    pid: int
    shim: int
    started_at: float | None
    state: str
    restart: bool  # launched differently from the plan now: restart once adopted
    frozen_by: str | None = None  # its leaf is frozen: by "operator" or "controller"


Action = Restore | Remove | Clear | Adopt


def read_saved(path: Path) -> dict[str, dict[str, Any]]:
    """The state file's workloads (nothing when it is missing or unreadable)."""
    try:
        saved = json.loads(path.read_text()).get("workloads", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {n: e for n, e in saved.items() if isinstance(e, dict)}


def left_running(saved: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Workloads the state file says were running when the last nxrd exited."""
    return sorted(name for name, entry in saved.items() if entry.get("state") in RUNNING)


def candidates(saved: Mapping[str, Mapping[str, Any]], planned: Mapping[str, Planned]) -> list[str]:
    """Workloads recorded as running in the leaf the plan still gives them: the ones whose
    leaf must be looked at."""
    return [
        name
        for name, entry in saved.items()
        if entry.get("state") in RUNNING
        and name in planned
        and entry.get("cgroup") == planned[name].cgroup
    ]


def decide(
    saved: Mapping[str, Mapping[str, Any]],
    planned: Mapping[str, Planned],
    seen: Mapping[str, Seen],
) -> list[Action]:
    """What to do with each workload a previous nxrd recorded."""
    out: list[Action] = []
    for name, entry in saved.items():
        state = entry.get("state")
        wl = planned.get(name)
        if state not in RUNNING:
            if wl is None or entry.get("launch") != wl.launch:
                continue  # gone, or launched differently now: a fixed profile starts fresh
            cause = entry.get("stop_cause")
            out.append(
                Restore(
                    name,
                    str(state),
                    str(entry.get("reason", "")),
                    cause if isinstance(cause, str) else None,
                    entry.get("held") is True,
                )
            )
            continue
        if wl is None or entry.get("cgroup") != wl.cgroup:
            out.append(Remove(name, str(entry.get("cgroup") or "")))
            continue
        pid, shim = entry.get("pid"), entry.get("shim_pid")
        leaf = seen.get(name, Seen({}, ()))
        # Trust state.json only as far as the kernel and the shim's record confirm it
        # (after a reboot its PIDs may belong to unrelated processes).
        if (
            not isinstance(pid, int)
            or not isinstance(shim, int)
            or leaf.status.get("pid") != pid
            or leaf.status.get("shim_pid") != shim
            or pid not in leaf.procs
        ):
            out.append(Clear(name))
            continue
        launched = entry.get("launch")
        started = entry.get("started_at")
        # The kernel says whether it is frozen; the state file, by whom. A freeze it does
        # not record (nxrd died before saving) is kept for an operator to lift: frozen is
        # what the kernel shows, and thawing it is then one command away.
        by = entry.get("frozen_by")
        out.append(
            Adopt(
                name,
                pid,
                shim,
                started if isinstance(started, int | float) else None,
                str(state),
                restart=launched is not None and launched != wl.launch,
                frozen_by=(by if by in ("operator", "controller") else "operator")
                if leaf.frozen
                else None,
            )
        )
    return out


def adopt(d: Daemon, now: float) -> None:
    """Take over what the state file says a previous nxrd left running."""
    saved = read_saved(d.state_file())
    planned = {
        name: Planned(rec.plan.cgroup, d.sup.launch_key(name))
        for name, rec in d.sup.records.items()
    }
    if not saved and (saved := rebuilt(d, planned)):
        how = "unreadable" if d.state_file().exists() else "missing"
        d.say(
            f"state file {d.state_file()} {how}: found {', '.join(sorted(saved))} running"
            " from their shims' records and their leaves; taking them over"
        )
    seen = {
        name: Seen(
            d.host.read_status(d.runtime.status_file(name)) or {},
            tuple(d.fs.procs(planned[name].cgroup)),
            frozen(d, planned[name].cgroup),
        )
        for name in candidates(saved, planned)
    }
    for action in decide(saved, planned, seen):
        execute(d, action, now)


def frozen(d: Daemon, cgroup: str) -> bool:
    try:
        return d.fs.read(cgroup, "cgroup.freeze").strip() == "1"
    except KernelError:
        return False  # no leaf: nothing to adopt there either


def rebuilt(d: Daemon, planned: Mapping[str, Planned]) -> dict[str, dict[str, Any]]:
    """What the state file would have said, from the kernel: each planned leaf holding the
    process its shim recorded as still running. Without it, a truncated or deleted state
    file would start every workload a second time beside the one still running."""
    out: dict[str, dict[str, Any]] = {}
    for name, wl in planned.items():
        status = d.host.read_status(d.runtime.status_file(name)) or {}
        pid, shim = status.get("pid"), status.get("shim_pid")
        if status.get("exit") is not None or not isinstance(pid, int) or not d.fs.exists(wl.cgroup):
            continue
        if pid in d.fs.procs(wl.cgroup):
            # "starting": its readiness is checked again; launched as now is all it can say
            out[name] = {
                "state": State.STARTING.value,
                "pid": pid,
                "shim_pid": shim,
                "cgroup": wl.cgroup,
                "started_at": status.get("started"),
            }
    return out


def execute(d: Daemon, action: Action, now: float) -> None:
    if isinstance(action, Restore):
        d.sup.restore(action.name, action.state, action.reason, action.stop_cause, action.held)
    elif isinstance(action, Remove):
        if action.cgroup and d.fs.exists(action.cgroup):
            d.fs.write(action.cgroup, "cgroup.kill", "1")
            with contextlib.suppress(KernelError):
                d.fs.rmdir_when_empty(action.cgroup, wait=2.0)
        d.events.record(d.host.time(), action.name, "ready", "stopped", "no longer in the profile")
    elif isinstance(action, Clear):
        plan = d.sup.records[action.name].plan
        if d.runtime.populated(plan):
            d.runtime.kill_all(plan)
    else:
        d.runtime.watch(action.shim)
        started = action.started_at or now
        by = action.frozen_by
        if by == "controller" and not d.controller.inherit_freeze(action.name):
            by = "operator"  # no controller steps down from it now: an operator's to lift
        d.sup.adopt(action.name, action.pid, action.shim, started, now, action.state, by)
        if action.restart:
            # Its cgroup values were updated live by apply_plan; command or env need a restart.
            d.sup.restart(action.name, now, cause="profile-changed")
