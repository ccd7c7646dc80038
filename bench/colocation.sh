#!/usr/bin/env bash
# Co-location: the demo's latency-critical server (PP-OCR on ONNX Runtime, over HTTP) beside
# its batch inference job (Silero VAD) and background indexer under five set-ups in one run
# (plain processes; static cgroup weights; nxr static pinning; the same with batch and
# background held at the controller's cap-25% rung; nxr with the controller), plus batch
# alone for its capacity and the server alone on one CPU (what no rung of the controller can
# improve on), at three load levels with a step up and a step down: 20% of the server's
# capacity alone (measured first, under load) for 20 s, 60% for 30 s, 40% for 20 s. Prints
# p99/SLO, windows over the SLO, batch throughput (of batch alone and of what the server
# left idle), utilization and the reaction to the step, and plots latency. In the test VM
# when this host lacks cgroup v2 (about 13 minutes).
#   bash bench/colocation.sh [OUT_DIR]      (default bench-out/colocation)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/live.sh alone,solo,plain,weights,pinned,capped,controller 20%:20,60%:30,40%:20 \
    "${1:-bench-out/colocation}"
