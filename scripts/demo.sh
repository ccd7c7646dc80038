#!/usr/bin/env bash
# The main job: a real pretrained model served over HTTP with a p99 SLO (PP-OCR on ONNX
# Runtime), a batch inference job (Silero VAD) and a background indexer (profiles/demo.toml)
# run under nxrd with a load step, first with static pinning (controller off), then with the
# latency-SLO controller on, after the server by itself under the same load (what no
# controller rung can improve on); prints p99 against the SLO, windows over it, batch
# throughput and the controller's actions, and plots latency. Runs inside a qemu VM when
# this host lacks cgroup v2 (about 12 minutes). Sets itself up first (apt packages,
# virtualenv). Results: demo-out/ (NXR_DEMO_OUT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH=$PWD/.venv/bin:$PATH

step() {
    printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"
    "${@:2}"
}

step "This host, as nxr sees it" nxrd topology --summary
step "Validate the example profiles" nxrctl validate profiles/*.toml
step "The demo's profile, planned for a 2-CPU host (the VM's topology)" \
    nxrctl plan profiles/demo.toml --topology tests/fixtures/topologies/vm-2cpu.json
# Load as a share of what the server answers alone on one CPU (measured first): the test
# VM's speed varies twofold from one day to the next, and this keeps the pressure the same.
step "Batch alone, the server alone, then both under static pinning, then under the controller; load 20% of the server's capacity, stepping to 60%" \
    bash scripts/live.sh alone,solo,pinned,controller 20%:20,60%:30 "${NXR_DEMO_OUT:-demo-out}"
