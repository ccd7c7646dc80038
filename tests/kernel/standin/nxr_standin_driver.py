"""What the stand-in driver knows: its GPUs, and which live process holds how much on which.

The stand-in torch records each allocation here; the stand-in pynvml lists them per GPU,
as NVML's per-process lists do, dropping processes that have exited.
"""

from __future__ import annotations

import os
from pathlib import Path

# A fixed path: nxrd gives workloads a clean environment, so none could be passed in it.
PROCS = Path("/tmp/nxr-standin-gpu.procs")
UUIDS = ["GPU-0", "GPU-1"]  # tests/unit/fake_nvml.py's two_l4s()


def hold(uuid: str, nbytes: int) -> None:
    with PROCS.open("a") as f:
        f.write(f"{os.getpid()} {uuid} {nbytes}\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def held(uuid: str) -> list[tuple[int, int | None]]:
    """(PID, bytes) of each live process holding memory on the GPU uuid."""
    try:
        lines = PROCS.read_text().splitlines()
    except FileNotFoundError:
        return []
    out: dict[int, int] = {}
    for line in lines:
        pid, gpu, nbytes = line.split()
        if gpu == uuid and _alive(int(pid)):
            out[int(pid)] = out.get(int(pid), 0) + int(nbytes)
    return sorted(out.items())
