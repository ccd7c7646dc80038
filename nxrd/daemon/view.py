"""What the API reads of the running nxrd beyond the supervisor's records: the handlers'
Daemon protocol (api/handlers.py), answered from the daemon's parts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxrd.api.handlers import workload_status
from nxrd.api.views import leaf_figures, resources
from nxrd.daemon.isolation import inside
from nxrd.errors import NxrError
from nxrd.model.replicas import is_front
from nxrd.model.units import parse_cpu_list
from nxrd.supervisor.supervisor import Record

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon


class View:
    def __init__(self, d: Daemon) -> None:
        self.d = d

    def stats(self, rec: Record) -> dict[str, Any]:
        """Live figures of a workload's leaf, for status, top and metrics."""
        d = self.d
        out: dict[str, Any] = {**leaf_figures(d.fs, rec.plan.cgroup)}
        out.update(d.readings.rates(rec.name))
        out["latency_seconds"] = d.controller.latency(rec.name, d.host.monotonic())
        if rec.name in d.rotation.figures:
            out["front" if is_front(rec.name) else "requests"] = d.rotation.figures[rec.name]
        if rec.name in d.egress.figures:
            out["net"] = d.egress.figures[rec.name]
        if rec.spec.right_size is not None:
            out["memory_right_size"] = d.controller.sizing.high(rec.name)
        if d.gpus is not None:
            planned = [g.index for g in rec.plan.gpus]
            out.update(d.gpus.use.workload(rec.name, planned, rec.pid is not None))
        return out

    def explain(self, rec: Record) -> dict[str, Any]:
        out = resources(self.d.fs, self.d.ledger.of(rec.plan.cgroup), rec)
        if rec.plan.exclusive and rec.plan.cpus:
            # as a process's cgroup file names it: relative to the cgroup mount
            mount = self.d.topology.cgroup.mount
            own = "/" + (inside(self.d.root / rec.plan.cgroup, mount) or "")
            cores = parse_cpu_list(rec.plan.cpus)
            out["others_on_cores"] = self.d.isolation.cpus.others_on(cores, own)
        return out

    def log_file(self, name: str) -> Path:
        return self.d.runtime.log_file(name)

    def reconfigure(
        self, files: list[tuple[str, str]] | None, dry_run: bool, who: str
    ) -> dict[str, Any]:
        return self.d.reconf.reconfigure(files, dry_run, who)

    def summary(self) -> str:
        """One line for `systemctl status`: how many workloads are in each state."""
        if self.d.waiting:
            return f"no profile in {', '.join(self.d.configured)}: add one, then reload"
        counts: dict[str, int] = {}
        for rec in self.d.sup.records.values():
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return f"{len(self.d.sup.records)} workloads: {states}"

    def release_gpu(self, index: int, who: str) -> dict[str, Any]:
        if self.d.gpus is None:
            raise NxrError("no GPUs on this host: nothing is quarantined")
        return self.d.gpus.release(self.d, index, f"released by {who}")

    def status_docs(self) -> list[dict[str, Any]]:
        """What status shows for every workload (also the metrics' source)."""
        return [workload_status(r, self.stats(r)) for r in list(self.d.sup.records.values())]
