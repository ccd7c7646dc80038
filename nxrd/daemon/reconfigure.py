"""Changing the profile of a running nxrd: reload (SIGHUP, re-read the configured files),
`nxrctl apply` (files sent over the API, kept across restarts while the configured ones
are unchanged), and the plan switch that GPU quarantine also uses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nxrd.api.handlers import Handlers
from nxrd.daemon.adopt import left_running, read_saved
from nxrd.errors import NxrError, ProfileError
from nxrd.files import write_atomically
from nxrd.model.plan import Plan
from nxrd.plan import make_plan
from nxrd.plan.diff import Change, diff
from nxrd.profile.load import parse_profiles, read_profiles
from nxrd.profile.model import Profile

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from nxrd.api.metrics import MetricsServer
    from nxrd.controller.push import PushReceiver
    from nxrd.daemon.core import Daemon


def applied(state_dir: Path, configured: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The profile last applied with `nxrctl apply`, while the configured files that
    were in force then are unchanged; once they change (or on reload) they win."""
    try:
        saved = json.loads(_applied_file(state_dir).read_text())
        if saved["configured"] == _digest(configured):
            return [(str(n), str(t)) for n, t in saved["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def starting_files(
    configured: list[str], state_dir: Path, state_file: Path
) -> tuple[list[tuple[str, str]], list[tuple[str, str]] | None]:
    """The configured profile files at start, and the profile applied over them if any.

    An empty profile directory (a fresh install) starts nxrd with no workloads, waiting for
    a profile and a reload (`nxrctl validate` and `plan` still refuse it), unless the last
    nxrd left workloads running: starting without their profile would stop them.
    """
    files = read_profiles(configured, allow_empty=True, guarded=True)
    over = applied(state_dir, files)
    if not files and not over and (left := left_running(read_saved(state_file))):
        raise NxrError(
            f"no profile in {', '.join(configured)}, but the last nxrd left "
            f"{', '.join(left)} running; put the profile back (without it nxrd would stop them)"
        )
    return files, over


class Reconfigurer:
    def __init__(self, d: Daemon) -> None:
        self.d = d

    def replan(self, profile: Profile, source: str, fresh: bool = False) -> Plan:
        """The profile planned on this host: off quarantined GPUs, keeping the GPUs each
        workload holds where it can (fresh: neither, as at start), with the users' UIDs
        looked up here."""
        d = self.d
        avoid: Mapping[str, str] = {}
        keep: Mapping[str, Sequence[str]] = {}
        if not fresh:
            avoid = d.gpus.quarantined() if d.gpus is not None else {}
            keep = {w.name: [g.uuid for g in w.gpus] for w in d.plan.workloads}
        uids = {"": d.host.euid()}
        for wl in profile.workloads.values():
            # not on this host (or no valid name): its start says so
            if wl.user is not None and (uid := d.host.uid_of(wl.user)) is not None:
                uids[wl.user] = uid
        plan = make_plan(profile, d.topology, source, avoid, keep, uids)
        if plan.egress is not None and (why := d.shaper.problem(plan.egress)) is not None:
            raise NxrError(f"{source}: host.net: {why}")  # before anything is applied
        return plan

    def reconfigure(
        self, files: list[tuple[str, str]] | None, dry_run: bool, who: str
    ) -> dict[str, object]:
        """Apply a changed profile (files None: re-read the configured ones, as a reload).

        All or nothing: an invalid profile, a plan that does not fit or a cgroup write the
        kernel refuses changes nothing. Returns the changes and how each one lands.
        """
        d = self.d
        try:
            configured = read_profiles(d.configured, guarded=True)
        except ProfileError:
            if files is None:
                raise
            configured = []  # only recorded; the next start fails on it and says why
        profile, source = parse_profiles(files if files is not None else configured)
        plan = self.replan(profile, source)
        changes = diff((d.profile, d.plan), (profile, plan))
        address = profile.host.metrics
        if address != d.profile.host.metrics:
            changes.append(
                Change("", "host.metrics", d.profile.host.metrics or "", address or "", "live")
            )
        if not dry_run:
            self._apply(files, profile, plan, source, who, configured)
            verb = "reload" if files is None else "nxrctl apply"
            d.say(f"{verb} by {who}: {len(changes)} changes")
        return {
            "source": source,
            "changes": [c.to_dict() for c in changes],
            "applied": not dry_run,
            "warnings": plan.warnings,
        }

    def _apply(
        self,
        files: list[tuple[str, str]] | None,
        profile: Profile,
        plan: Plan,
        source: str,
        who: str,
        configured: list[tuple[str, str]],
    ) -> None:
        d = self.d
        if files is None:
            d.host.notify("RELOADING=1")
        verb = "reload" if files is None else "nxrctl apply"
        address = profile.host.metrics
        metrics, push = d.metrics, d.push
        opened: list[MetricsServer | PushReceiver] = []
        try:
            # Sockets are bound before anything is written: a taken port changes nothing.
            if address != d.profile.host.metrics and address:
                metrics = d.metrics_server(address)
                opened.append(metrics)
            elif address is None:
                metrics = None
            if push is None and pushes(profile):
                push = d.latency_receiver()
                opened.append(push)
                if push.note:
                    d.say(push.note)
            self.write(plan, f"{verb} by {who} ({source})")
        except NxrError:
            for sock in opened:
                sock.close()
            raise
        finally:
            if files is None:
                d.host.notify("READY=1")
        if push is not d.push and push is not None:
            d.push, d.runtime.latency_socket = push, push.path
        if metrics is not d.metrics:
            if d.metrics is not None:
                d.metrics.close()
            d.metrics = metrics
        self.switch(profile, plan, source, who)
        d.waiting = False
        if files is None:
            _applied_file(d.state_dir).unlink(missing_ok=True)
        else:
            text = json.dumps({"configured": _digest(configured), "files": files, "by": who})
            write_atomically(_applied_file(d.state_dir), text)

    def write(self, plan: Plan, why: str) -> None:
        """Write a new plan's cgroup values (all or nothing: NxrError changes nothing)."""
        d = self.d
        # Static values first, so the new plan's are what stays written.
        d.controller.release(d.host.monotonic(), "profile changed")
        with d.ledger.because(why):
            d.apply(plan)

    def switch(self, profile: Profile, plan: Plan, source: str, who: str) -> None:
        """Run the new plan, once its values are written: restart what it changed."""
        d = self.d
        d.sup.reconfigure(profile, plan, d.host.monotonic(), who)
        d.controller.close()
        d.controller = d.make_controller(profile, plan)
        d.profile, d.plan, d.source = profile, plan, source
        d.isolation.apply(plan, profile)
        d.ensure_mps()
        if isinstance(d.api.handlers, Handlers):
            d.api.handlers.plan = plan

    def reload_on_signal(self) -> None:
        try:
            self.reconfigure(None, False, "SIGHUP")
        except NxrError as e:
            lines = e.lines() if isinstance(e, ProfileError) else [str(e)]
            self.d.say("reload failed: " + "; ".join(lines))


def pushes(profile: Profile) -> bool:
    """Whether some workload pushes its latencies, or a front logs its requests (nxrd then
    listens for them)."""
    return any(
        w.serve is not None or (w.slo is not None and w.slo.source.push)
        for w in profile.workloads.values()
    )


def _applied_file(state_dir: Path) -> Path:
    return state_dir / "applied.json"


def _digest(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()
