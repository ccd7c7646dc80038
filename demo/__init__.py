"""The demo's workloads and harness: a CPU inference server that pushes its latencies, an
open-loop load generator with a load step, an elastic batch job and a background indexer,
all doing real BLAS matrix work (numpy), plus the harness that runs them under nxrd and the
report. Needs the `demo` extra (numpy; matplotlib for the plot)."""
