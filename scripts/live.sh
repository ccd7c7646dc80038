#!/usr/bin/env bash
# Run the demo's workloads under the given set-ups (demo.run), here when this host can
# isolate workloads (`nxrd check`), else inside the test VM (scripts/isolated.sh); then
# print the report and write the plot (demo.report).
#   scripts/live.sh SETUPS PHASES OUT_DIR     e.g. alone,pinned,controller 10:20,35:30 demo-out
set -euo pipefail
cd "$(dirname "$0")/.."
SETUPS=$1 PHASES=$2
mkdir -p "$3"
OUT=$(cd "$3" && pwd)
# The SLO in requests' worth of the server's CPU (demo.run --slo): 10x is the profile's
# 200 ms on a day the test VM serves 50 requests per CPU second. A wrong set-up or load is
# said here, not after the VM boots.
.venv/bin/python -m demo.run --check --setups "$SETUPS" --phases "$PHASES" --slo 10x
bash scripts/isolated.sh ".venv/bin/python -m demo.run --profile profiles/demo.toml \
--setups $(printf %q "$SETUPS") --phases $(printf %q "$PHASES") --slo 10x \
--out $(printf %q "$OUT")" "$OUT"
.venv/bin/python -m demo.report "$OUT" --png "$OUT/latency.png"
