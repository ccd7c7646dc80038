"""What applying a changed profile to a running nxrd would change, and how each change lands.

Pure: two (profile, plan) pairs in, a list of changes out. `nxrctl diff` prints it and
`nxrctl apply` acts on it; the supervisor uses the same launch fields to decide restarts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from nxrd.model.plan import DAEMON_LEAF, Plan, WorkloadPlan
from nxrd.plan.threads import THREAD_VARS
from nxrd.profile.model import Profile, Workload

# How a change takes effect.
LIVE = "live"  # written to the running cgroup or used by the supervisor at once
RESTART = "restart"  # the running process is stopped and started again
NEXT_START = "next-start"  # used when the process next starts; no restart now
START = "start"
STOP = "stop"

# Spec fields the supervisor reads while running; a change needs no restart.
_SUPERVISION = ("restart", "ready", "stop", "priority", "pool", "pool_slots", "after", "slo")


@dataclass(frozen=True)
class Change:
    workload: str  # "" for the class parents and the subtree root
    what: str  # a cgroup file, "command", "env FOO", "threads", "class", "added"...
    old: str
    new: str
    effect: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def launch_fields(plan: WorkloadPlan, spec: Workload) -> dict[str, Any]:
    """What a process is started with and cannot change while it runs.

    Thread-count variables are left out: they follow the cores, which change live; the new
    count is used at the next start (a restart for that alone is the operator's call).
    """
    env = {k: v for k, v in {**spec.env, **plan.env}.items() if k not in THREAD_VARS}
    # A front's configuration is not among them: HAProxy reloads it without dropping a
    # request (daemon/fronts.py).
    return {
        "command": list(spec.command),
        "env": dict(sorted(env.items())),
        "user": spec.user,
        "group": spec.group,
        "cwd": spec.cwd,
    }


def launch_key(plan: WorkloadPlan, spec: Workload) -> str:
    """A short fingerprint of launch_fields, kept in state.json to spot changed launches."""
    return hashlib.sha256(json.dumps(launch_fields(plan, spec)).encode()).hexdigest()[:16]


def diff(old: tuple[Profile, Plan], new: tuple[Profile, Plan]) -> list[Change]:
    """Every difference that matters to the running system, in a stable order."""
    (old_profile, old_plan), (new_profile, new_plan) = old, new
    changes: list[Change] = []
    old_tree = {c.path: c.files for c in [old_plan.root, *old_plan.classes]}
    for cg in [new_plan.root, *new_plan.classes]:
        changes += _files("", cg.path, old_tree.get(cg.path, {}), cg.files)
    if old_plan.daemon_cpus != new_plan.daemon_cpus:  # nxrd's own leaf (kernel/apply.py)
        changes.append(
            Change(
                "", f"{DAEMON_LEAF}/cpuset.cpus", old_plan.daemon_cpus, new_plan.daemon_cpus, LIVE
            )
        )
    old_names = {w.name for w in old_plan.workloads}
    for wl in new_plan.workloads:
        spec = new_profile.workloads[wl.name]
        if wl.name not in old_names:
            changes.append(Change(wl.name, "added", "", wl.cgroup, START))
            continue
        changes += _workload(old_plan.workload(wl.name), old_profile.workloads[wl.name], wl, spec)
    new_names = {w.name for w in new_plan.workloads}
    for wl in old_plan.workloads:
        if wl.name not in new_names:
            changes.append(Change(wl.name, "removed", wl.cgroup, "", STOP))
    return changes


def _files(workload: str, where: str, old: dict[str, str], new: dict[str, str]) -> list[Change]:
    prefix = f"{where}/" if where and not workload else ""
    changed = [
        Change(workload, prefix + f, old.get(f, ""), v, LIVE)
        for f, v in new.items()
        if old.get(f) != v
    ]
    zswap = "memory.zswap.max"  # written only while zswap_max is set; apply puts max back
    if zswap in old and zswap not in new:
        changed.append(Change(workload, prefix + zswap, old[zswap], "max", LIVE))
    return changed


def _workload(
    old: WorkloadPlan, old_spec: Workload, new: WorkloadPlan, spec: Workload
) -> list[Change]:
    name = new.name
    if old.cgroup != new.cgroup:
        # Another class parent: a process cannot carry its memory charge across, restart.
        return [Change(name, "class", old.workload_class, new.workload_class, RESTART)]
    out = _files(name, "", old.files, new.files)
    was, now = launch_fields(old, old_spec), launch_fields(new, spec)
    for key in ("command", "user", "group", "cwd"):
        if was[key] != now[key]:
            out.append(Change(name, key, _text(was[key]), _text(now[key]), RESTART))
    for var in sorted(set(was["env"]) | set(now["env"])):
        if was["env"].get(var) != now["env"].get(var):
            out.append(
                Change(
                    name, f"env {var}", was["env"].get(var, ""), now["env"].get(var, ""), RESTART
                )
            )
    if old.threads != new.threads:
        out.append(Change(name, "threads", _text(old.threads), _text(new.threads), NEXT_START))
    old_gpus = [g.uuid for g in old.gpus]
    if old_gpus != [g.uuid for g in new.gpus]:
        out.append(
            Change(name, "gpus", _text(old_gpus), _text([g.uuid for g in new.gpus]), RESTART)
        )
    for key in _SUPERVISION:
        a, b = _dump(getattr(old_spec, key)), _dump(getattr(spec, key))
        if a != b:
            out.append(Change(name, key, a, b, LIVE))
    return out


def _dump(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def needs_restart(changes: list[Change]) -> set[str]:
    return {c.workload for c in changes if c.effect == RESTART}
