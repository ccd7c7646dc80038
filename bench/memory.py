"""Right-sizing in the test VM: memory given back, and what it costs the job.

    bash scripts/vm-run.sh '.venv/bin/python -u bench/memory.py'   # in the test VM, as root

A batch job reads a 128 MiB file once, twice its working set (page cache it never needs
again; an ext4 on a loop device, since the VM's own filesystems are tmpfs and 9p), and then
works on 64 MiB for
SECONDS, counting passes over it. Run under nxrd without and with `right_size`, RUNS times
each, alternating. Printed per set-up: passes per second after the read (median, range),
memory.current and its page cache at the end, the seconds until memory.current was within
20% of what it uses besides that cache (with right_size), and the ratio of the medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from nxrd_run import running

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
RUNS = int(os.environ.get("MEMORY_RUNS", "3"))
SECONDS = int(os.environ.get("MEMORY_SECONDS", "45"))

JOB = """
import sys, time
with open(sys.argv[1], "rb") as f:
    while f.read(1 << 20):
        pass
ws = bytearray(64 << 20)
passes = 0
with open(sys.argv[2], "w") as out:
    print("read", time.monotonic(), file=out, flush=True)
    while True:
        for i in range(0, len(ws), 4096):
            ws[i] = (ws[i] + 1) & 255
        passes += 1
        print(passes, time.monotonic(), file=out, flush=True)
"""


def stat(leaf: Path) -> dict[str, int]:
    lines = (leaf / "memory.stat").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


def run(tmp: Path, cold: Path, sized: bool) -> dict[str, float]:
    progress = tmp / f"progress-{uuid.uuid4().hex[:6]}"
    extra = 'right_size = {floor = "16M", interval = "1s"}\n' if sized else ""
    text = (
        f'[workloads.scan]\ncommand = ["{PY}", "{tmp}/job.py", "{cold}", "{progress}"]\n'
        f'class = "batch"\nmemory_max = "1G"\n{extra}'
    )
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3")
    with running(tmp, text) as root:
        return measured(root / "batch/scan", progress)


def measured(leaf: Path, progress: Path) -> dict[str, float]:
    """The job's passes per second after its read, its memory at the end, and when it was
    first within 20% of what it uses besides the page cache (-1: never)."""
    while not (progress.exists() and progress.read_text().startswith("read")):
        time.sleep(0.2)
    began = float(progress.read_text().split()[1])
    sized_at = None
    while time.monotonic() - began < SECONDS:
        s, current = stat(leaf), int((leaf / "memory.current").read_text())
        if sized_at is None and current <= 1.2 * (current - s["file"]):
            sized_at = time.monotonic() - began
        time.sleep(0.5)
    s, current = stat(leaf), int((leaf / "memory.current").read_text())
    lines = progress.read_text().splitlines()[1:]
    passes, last = int(lines[-1].split()[0]), float(lines[-1].split()[1])
    return {
        "rate": passes / (last - began),
        "current": current / (1 << 20),
        "file": s["file"] / (1 << 20),
        "sized_at": -1.0 if sized_at is None else sized_at,
    }


def main() -> None:
    for module in ("loop", "ext4"):
        subprocess.run(["modprobe", module], check=True)
    with tempfile.TemporaryDirectory(prefix="nxr-mem-") as t:
        tmp = Path(t)
        (tmp / "job.py").write_text(JOB)
        backing, mnt = tmp / "backing", tmp / "mnt"
        backing.mkdir()
        mnt.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=400M", "tmpfs", str(backing)], check=True
        )
        image = backing / "disk.img"
        with image.open("wb") as f:
            f.truncate(320 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
        try:
            cold = mnt / "cold.bin"
            with cold.open("wb") as f:
                for _ in range(128):
                    f.write(b"\x5a" * (1 << 20))
            results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for i in range(RUNS):
                for sized in (False, True):
                    r = run(tmp, cold, sized)
                    results[sized].append(r)
                    print(f"run {i + 1} right_size={sized}: {r}", flush=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
            subprocess.run(["umount", str(backing)], check=False)
    med = {}
    for sized, rs in results.items():
        rates = [r["rate"] for r in rs]
        med[sized] = statistics.median(rates)
        name = "right_size" if sized else "unlimited "
        current = statistics.median(r["current"] for r in rs)
        cache = statistics.median(r["file"] for r in rs)
        line = (
            f"{name}: {med[sized]:.2f} passes/s (range {min(rates):.2f}-{max(rates):.2f}), "
            f"memory.current at the end {current:.0f} MiB (page cache {cache:.0f} MiB)"
        )
        if sized:
            took = statistics.median(r["sized_at"] for r in rs)
            line += f", within 20% of its use after {took:.1f} s"
        print(line)
    print(f"throughput right_size / unlimited: {med[True] / med[False]:.3f} (medians, {RUNS} runs)")


if __name__ == "__main__":
    main()
