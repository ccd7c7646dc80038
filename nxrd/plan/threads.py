"""Thread-count variables nxr sizes to the CPUs a workload was given."""

from __future__ import annotations

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
