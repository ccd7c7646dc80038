"""What status and explain show of a workload's leaf, read through the cgroupfs."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from nxrd.api.explain import explain
from nxrd.controller.observe import pressure
from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.ledger import Write
from nxrd.supervisor.supervisor import Record


def leaf_figures(fs: CgroupFS, cgroup: str) -> dict[str, Any]:
    """Memory, CPU time, memory events and pressure of a leaf (nothing if it is gone)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(KernelError, ValueError, IndexError):
        if fs.exists(cgroup):
            out["memory_current"] = int(fs.read(cgroup, "memory.current"))
            stat = fs.read_keyed(cgroup, "cpu.stat")
            out["cpu_usage_usec"] = int(stat["usage_usec"])
            out["cpu_throttled_usec"] = int(stat.get("throttled_usec", 0))
            events = fs.read_keyed(cgroup, "memory.events")
            out["memory_events"] = {k: int(v) for k, v in events.items()}
            for res in ("cpu", "memory", "io"):
                p = pressure(fs.read(cgroup, f"{res}.pressure"))
                out[f"{res}_pressure"] = {
                    "some_avg10": p.get("some_avg10", 0.0),
                    "full_avg10": p.get("full_avg10", 0.0),
                    "some_seconds_total": p.get("some_total_usec", 0.0) / 1e6,
                    "full_seconds_total": p.get("full_total_usec", 0.0) / 1e6,
                }
    return out


def resources(fs: CgroupFS, written: Mapping[str, Write], rec: Record) -> dict[str, Any]:
    """Requested, planned, written and effective value of each of the leaf's resources."""
    cg = rec.plan.cgroup
    kernel: dict[str, str] = {}
    for filename in [*rec.plan.files, "cpuset.cpus.effective", "cpuset.mems.effective"]:
        with contextlib.suppress(KernelError):
            kernel[filename] = fs.read(cg, filename)
    spec = rec.spec.model_dump(mode="json", by_alias=True)
    return {"resources": explain(spec, rec.plan.files, written, kernel)}
