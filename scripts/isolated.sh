#!/usr/bin/env bash
# Run a command line where nxrd can isolate workloads: on this host when it has cgroup v2
# with the controllers nxr needs (`nxrd check`), else inside the test VM, which sees the
# working tree and shares OUT_DIR with this host at the same path. The command line runs
# in the repository root; quote paths in it for a shell (printf %q).
#   scripts/isolated.sh COMMAND_LINE OUT_DIR
set -euo pipefail
mkdir -p "$2"
OUT=$(cd "$2" && pwd)  # a relative OUT_DIR is the caller's, not the repository's
cd "$(dirname "$0")/.."
if .venv/bin/nxrd check >/dev/null 2>&1; then
    echo "isolated: this host has cgroup v2 with the controllers nxr needs: running here"
    bash -c "$1"
else
    echo "isolated: this host cannot isolate workloads (nxrd check): running in the test VM"
    NXR_VM_OUT=$OUT bash scripts/vm-run.sh "$1"
fi
