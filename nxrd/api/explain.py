"""`nxrctl explain NAME`: for each resource, what the profile asked, what nxr planned, what it
last wrote (who and why), and what the kernel has now. Pure: values in, rows out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nxrd.ledger import Write
from nxrd.model.units import format_cpu_list

# cgroup file -> the profile keys that decide it (class defaults apply when none is set).
DECIDED_BY: dict[str, tuple[str, ...]] = {
    "cpuset.cpus": ("cpus", "cpuset", "exclusive"),
    "cpuset.mems": ("cpus", "cpuset", "gpus"),
    "cpu.idle": ("cpu_idle", "class"),
    "cpu.weight": ("cpu_weight", "class"),
    "cpu.max": ("cpu_max",),
    "memory.min": ("memory_min",),
    "memory.low": ("memory_low", "class"),
    "memory.high": ("memory_high",),
    "memory.max": ("memory_max",),
    "memory.swap.max": ("swap_max",),
    "memory.zswap.max": ("zswap_max",),
    "memory.oom.group": (),
    "pids.max": ("pids_max",),
    "io.weight": ("io_weight",),
}


def requested(spec: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """'cpus = 2, class = batch', or who decides when the profile says nothing."""
    said = [f"{k} = {_value(spec[k], k)}" for k in keys if spec.get(k) not in (None, [], ())]
    if said:
        return ", ".join(said)
    return "not set: nxr's default" if keys else "always set by nxr"


def explain(
    spec: Mapping[str, Any],
    files: Mapping[str, str],
    written: Mapping[str, Write],
    kernel: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One row per planned cgroup file of a workload."""
    rows = []
    for filename, planned in files.items():
        w = written.get(filename)
        rows.append(
            {
                "resource": filename,
                "profile": requested(spec, DECIDED_BY.get(filename, ())),
                "planned": planned,
                "written": None if w is None else w.value,
                "by": None if w is None else w.by,
                "at": None if w is None else w.time,
                "kernel": kernel.get(filename),
                "effective": kernel.get(f"{filename}.effective"),
            }
        )
    return rows


def _value(v: Any, key: str = "") -> str:
    if key == "cpuset" and isinstance(v, list | tuple):
        return format_cpu_list([int(c) for c in v])
    if isinstance(v, list | tuple):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)
