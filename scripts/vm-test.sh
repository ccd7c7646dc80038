#!/usr/bin/env bash
# The kernel tier: tests/kernel as root inside the test VM (scripts/vm-run.sh).
# Fails, never skips, when the VM cannot start. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=""
(($#)) && ARGS=$(printf ' %q' "$@")  # with no arguments printf would still emit '' (= ".")
exec bash scripts/vm-run.sh \
    "NXR_KERNEL_TIER=1 .venv/bin/python -m pytest tests/kernel -p no:cacheprovider -p no:hypothesispytest -v$ARGS"
