"""Class defaults (design notes, "Classes"); every one is overridable per workload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassDefaults:
    rank: int  # allocation order: lower first
    parent_weight: int | None  # cpu.weight of the class's parent cgroup; None = cpu.idle
    exclusive: bool
    may_be_capped: bool


# Hierarchical cpu.weight: siblings compete by their weights, so the class
# parents set the split between classes and a workload's cpu_weight only
# ranks it inside its class. 1000:300:50 keeps batch from crowding interactive
# work; background runs at cpu.idle and gets only otherwise idle time.
CLASS_DEFAULTS: dict[str, ClassDefaults] = {
    "latency-critical": ClassDefaults(0, 1000, exclusive=True, may_be_capped=False),
    "interactive": ClassDefaults(1, 300, exclusive=False, may_be_capped=True),
    "batch": ClassDefaults(2, 50, exclusive=False, may_be_capped=True),
    "background": ClassDefaults(3, None, exclusive=False, may_be_capped=True),
}

DEFAULT_WORKLOAD_WEIGHT = 100
CPU_PERIOD_US = 100_000

# Variables that size a library's thread pool. Without them a process pinned to
# 2 CPUs still starts one thread per host CPU and oversubscribes its own cores.
THREAD_VARS = (
    "OMP_NUM_THREADS",  # OpenMP, and PyTorch's intra-op pool
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "RAYON_NUM_THREADS",  # Rust tokenizers (Hugging Face tokenizers use rayon)
    "GOMAXPROCS",
)
