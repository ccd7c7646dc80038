#!/usr/bin/env bash
# All tests: lint, types, the unit tier on this machine, then the kernel tier and the
# systemd tier, each inside a qemu VM booting a Debian kernel with cgroup v2. Sets itself
# up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vm

echo "== lint (ruff), types (mypy; strict on the pure modules)"
.venv/bin/ruff check nxrd demo tests scripts bench
.venv/bin/ruff format --check nxrd demo tests scripts bench
.venv/bin/mypy nxrd demo

echo "== layers (import-linter: contracts in pyproject.toml)"
.venv/bin/lint-imports

echo "== unit tier (no root, fakes, captured topologies)"
.venv/bin/python -m pytest tests/unit

echo "== Debian package (built, installed into a clean Debian 12 root)"
bash packaging/test-install.sh

echo "== kernel tier (real cgroup v2, in the VM)"
bash scripts/vm-test.sh

echo "== systemd tier (the .deb under systemd as PID 1, in the VM)"
bash scripts/vm-systemd.sh
