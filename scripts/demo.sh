#!/usr/bin/env bash
# The main job for now: validate and plan the example profiles, for captured
# hosts and for this one. Sets itself up first (apt packages, virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH=$PWD/.venv/bin:$PATH
TOPO=tests/fixtures/topologies

step() {
    printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"
    "${@:2}"
}

step "This host, as nxr sees it" nxrd topology --summary
step "Validate the example profiles" nxrctl validate profiles/*.toml
step "Plan the CPU-only example on a 16-core SMT host (captured topology)" \
    nxrctl plan profiles/cpu-inference.toml --topology $TOPO/smt16-1gpu.json
step "Plan the GPU example on a 2-socket host with 8 GPUs (captured topology)" \
    nxrctl plan profiles/gpu-two-models.toml --topology $TOPO/2socket-8gpu.json
step "Plan a small profile for this host" nxrctl plan tests/fixtures/profiles/small.toml
step "A profile that does not fit: refused, with by how much" \
    nxrctl validate profiles/cpu-inference.toml --topology $TOPO/vm-2cpu.json \
    || echo "(exit $?: refused, as expected)"
step "A profile with mistakes: every problem, one line each" \
    nxrctl validate tests/fixtures/profiles/mistakes.toml \
    || echo "(exit $?: invalid, as expected)"
