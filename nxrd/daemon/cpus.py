"""Each workload's current CPUs, published where it can read them (NXR_CPUS_FILE).

Thread-count variables (OMP_NUM_THREADS...) are read once, when a runtime starts, so a
live resize (`nxrctl apply`, the controller lending or sharing cores) cannot change them.
A workload that can resize its pools at run time (PyTorch's torch.set_num_threads,
threadpoolctl for BLAS and OpenMP, numexpr.set_num_threads) reads this file instead: one
line, the CPU count and the list ("4 0-3"), rewritten whenever its cpuset.cpus is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nxrd.model.units import parse_cpu_list

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon


def line(cpus: str) -> str:
    """'0-3' -> '4 0-3'."""
    return f"{len(parse_cpu_list(cpus))} {cpus}\n"


def follow(d: Daemon) -> None:
    """Publish every workload's planned CPUs, then every later write of a leaf's
    cpuset.cpus, whoever writes it (apply, the controller), beside the ledger's record."""
    for rec in d.sup.records.values():
        d.runtime.publish_cpus(rec.name, line(rec.plan.cpus))
    record = d.ledger.record

    def written(rel: str, filename: str, value: str) -> None:
        record(rel, filename, value)
        if filename == "cpuset.cpus":
            for rec in d.sup.records.values():
                if rec.plan.cgroup == rel:
                    d.runtime.publish_cpus(rec.name, line(value))

    d.fs.on_write = written
