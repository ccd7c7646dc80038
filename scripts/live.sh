#!/usr/bin/env bash
# Run the demo's workloads under the given set-ups (nxrd.demo.run), here when this host can
# isolate workloads (`nxrd check`), else inside the test VM; then print the report and
# write the plot (nxrd.demo.report).
#   scripts/live.sh SETUPS PHASES OUT_DIR     e.g. alone,pinned,controller 10:20,35:30 demo-out
set -euo pipefail
cd "$(dirname "$0")/.."
SETUPS=$1 PHASES=$2
mkdir -p "$3"
OUT=$(cd "$3" && pwd)
RUN=".venv/bin/python -m nxrd.demo.run --profile profiles/demo.toml --setups $SETUPS --phases $PHASES --out $OUT"
if .venv/bin/nxrd check >/dev/null 2>&1; then
    echo "live: this host has cgroup v2 with the controllers nxr needs: running here"
    $RUN
else
    echo "live: this host cannot isolate workloads (nxrd check): running in the test VM"
    bash scripts/setup.sh --vm
    NXR_VM_OUT=$OUT bash scripts/vm-run.sh "$RUN"
fi
.venv/bin/python -m nxrd.demo.report "$OUT" --png "$OUT/latency.png"
