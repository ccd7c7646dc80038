"""scripts/gpu_check.py, the check a GPU machine runs, on the real kernel with a stand-in driver.

The VM has no GPU. tests/kernel/standin puts a pynvml (the unit tests' fake NVML, two GPUs,
whose per-process lists hold what the stand-in torch allocated) and a torch on the path, and
the test makes /dev/nvidia0 and /dev/nvidia1 (char 195:N). So the script, nxrd's attribution
of a process's GPU memory to the workload whose cgroup holds it, and the device filter all
run for real here; what a real driver reports is left to a GPU machine (docs/testing.md).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
sys.path.insert(0, str(STANDIN))

from nxr_standin_driver import PROCS  # noqa: E402


@pytest.fixture
def stand_in_driver() -> Iterator[None]:
    """The device nodes of the stand-in's two GPUs, and no memory held on them."""
    PROCS.unlink(missing_ok=True)
    made = []
    for minor in (0, 1):
        node = Path(f"/dev/nvidia{minor}")
        if not node.exists():
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(195, minor))
            made.append(node)
    try:
        yield
    finally:
        for node in made:
            node.unlink()
        PROCS.unlink(missing_ok=True)


def test_the_gpu_check_passes_with_a_stand_in_driver(
    cgroup_root: Path, tmp_path: Path, stand_in_driver: None
) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", str(out), "--cgroup-root", str(cgroup_root)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(STANDIN)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = r.stdout + r.stderr
    assert r.returncode == 0, said
    lines = said.splitlines()

    def line(start: str) -> str:
        return next((x for x in lines if x.startswith(start)), f"no line {start!r} in:\n{said}")

    # 1. each workload's CUDA sees the GPUs the plan gave it, and nothing else
    assert "CUDA sees ['GPU-0'] (planned ['GPU-0']) ok" in line(
        "model: CUDA_VISIBLE_DEVICES='GPU-0'"
    )
    assert "CUDA sees [] (planned []) ok" in line("cpu-only: CUDA_VISIBLE_DEVICES=''")
    # 2. nxrd's reader finds a plain process's 1 GiB under its PID
    plain = line("attribution: holder pid")
    pid = plain.split()[3]
    assert f"'memory_bytes': {1 << 30}, 'utilization_percent': 0.0, 'pids': [{pid}]" in plain
    # 3. a real nxrd attributes the held GiB to the workload holding it; no GPU for the other
    assert line("holder: held=True ").startswith(
        f"holder: held=True gpu_memory_bytes={1 << 30} "
    ), said
    refused = {"/dev/nvidia0": "EPERM", "/dev/nvidia1": "EPERM"}
    assert line("nogpu: ") == f"nogpu: opening /dev/nvidiaN -> {refused}", said
    assert "live: ok" in lines, (out / "nxrd.log").read_text()
