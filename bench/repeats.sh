#!/usr/bin/env bash
# Static pinning against the controller, judged over repeats: the server alone (solo),
# pinned and the controller, three times in one run with the order rotated
# (solo,pinned,controller; controller,solo,pinned; pinned,controller,solo), each time with
# the server's capacity measured first, at co-location's loads (20% for 20 s, 60% for 30 s,
# 40% for 20 s) and with the SLO at 10 times the server's CPU per request. Prints the
# windows over the SLO per run and in all, the reaction to each step up, and batch
# throughput with the controller as a share of pinning's in the same run (demo.repeats).
# The test VM's speed drifts by a third within a run, so single runs cannot tell the set-ups
# apart. In the test VM when this host lacks cgroup v2 (about 15 minutes).
#   bash bench/repeats.sh [OUT_DIR [SETUPS]]   (default bench-out/repeats and
#       solo,pinned,controller; controller+probe_after=0s is the controller with one of
#       the profile's settings changed, see demo.run); REPEATS_PHASES=20%:20,80%:30,20%:20
#       for other loads
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${2:-x} =~ ^[a-z0-9_.=+,-]+$ ]] || { echo "repeats: not a list of set-ups: $2" >&2; exit 2; }
bash scripts/setup.sh
.venv/bin/python -m demo.run --check --setups "${2:-solo,pinned,controller}" --slo 10x
mkdir -p "${1:-bench-out/repeats}"
OUT=$(cd "${1:-bench-out/repeats}" && pwd)
PHASES=${REPEATS_PHASES:-20%:20,60%:30,40%:20}
.venv/bin/python -m demo.run --check --setups solo --phases "$PHASES" --slo 10x
IFS=, read -ra SETUPS <<< "${2:-solo,pinned,controller}"
n=${#SETUPS[@]} RUNS=""
for i in 0 1 2; do  # runs a, b and c: the set-ups rotated i to the right
    order=""
    for j in "${!SETUPS[@]}"; do order+=,${SETUPS[$(((j - i % n + n) % n))]}; done
    RUNS+=" $(tr 012 abc <<< $i):${order#,}"
done
# the folder goes into a command line run by another shell: quoted for it
RUN="for o in $RUNS; do .venv/bin/python -m demo.run --profile profiles/demo.toml \
--setups \${o#*:} --phases $PHASES --slo 10x --out $(printf %q "$OUT")/\${o%%:*} || exit 1; done"
bash scripts/isolated.sh "$RUN" "$OUT"
.venv/bin/python -m demo.repeats "$OUT/a" "$OUT/b" "$OUT/c"
