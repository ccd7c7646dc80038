"""I/O weights in the test VM: two readers of the same disk with io.weight 1000 and 100,
without and with nxr's I/O setup (docs/isolation.md).

    bash scripts/vm-run.sh '.venv/bin/python -u bench/io_weight.py'   # in the test VM, as root

The disk: a null_blk device held to MBPS MB/s with a queue depth of 2, so that the disk,
not the emulated CPUs, is what the readers wait for (a loop device on tmpfs is CPU-bound:
weights act only where the disk is the bottleneck). Each reader streams it with O_DIRECT
(dd, 1 MiB blocks) for SECONDS. Set-ups, alternating, RUNS times:
  without   two cgroups with the weights written, scheduler none, io.cost off (the kernel's
            default: what nxr did before);
  io.cost   nxrd runs both as batch workloads with `io_weight`, and turns io.cost on;
  bfq       the same with the BFQ scheduler on the disk: nxrd leaves io.cost off and writes
            io.bfq.weight.
Printed per set-up and run: MiB/s of each (io.stat rbytes of its cgroup) and the ratio
heavy / light; then the median ratios.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from nxrd_run import running

RUNS = int(os.environ.get("IO_RUNS", "3"))
SECONDS = int(os.environ.get("IO_SECONDS", "20"))
MBPS = int(os.environ.get("IO_MBPS", "100"))
DISK = Path("/dev/nullb0")
READER = 'while :; do dd if="$1" of=/dev/null bs=1M count=256 iflag=direct status=none; done'


def rbytes(leaf: Path) -> int:
    total = 0
    for line in (leaf / "io.stat").read_text().splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                total += int(value)
    return total


def measure(leaves: dict[str, Path]) -> dict[str, float]:
    before = {n: rbytes(p) for n, p in leaves.items()}
    time.sleep(SECONDS)
    return {n: (rbytes(p) - before[n]) / SECONDS / (1 << 20) for n, p in leaves.items()}


def without() -> dict[str, float]:
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+io")
    root = Path(f"/sys/fs/cgroup/nxr-io-{uuid.uuid4().hex[:6]}")
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("+io")
    procs, leaves = [], {}
    try:
        for name, weight in (("heavy", 1000), ("light", 100)):
            leaf = root / name
            leaf.mkdir()
            (leaf / "io.weight").write_text(f"default {weight}")
            leaves[name] = leaf
            p = subprocess.Popen(["sh", "-c", READER, "sh", str(DISK)], start_new_session=True)
            (leaf / "cgroup.procs").write_text(str(p.pid))
            procs.append(p)
        return measure(leaves)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for leaf in leaves.values():
            while (leaf / "cgroup.procs").read_text().strip():
                time.sleep(0.1)
            leaf.rmdir()
        root.rmdir()


def with_nxr(tmp: Path) -> dict[str, float]:
    text = "".join(
        f'[workloads.{n}]\ncommand = ["sh", "-c", {READER!r}, "sh", "{DISK}"]\n'
        f'class = "batch"\nio_weight = {w}\n'
        for n, w in (("heavy", 1000), ("light", 100))
    )
    with running(tmp, text) as root:
        leaves = {n: root / "batch" / n for n in ("heavy", "light")}
        while not all(
            (p / "cgroup.procs").exists() and (p / "cgroup.procs").read_text().strip()
            for p in leaves.values()
        ):
            time.sleep(0.2)
        time.sleep(2)
        return measure(leaves)


def scheduler(name: str) -> None:
    Path("/sys/block/nullb0/queue/scheduler").write_text(name)


def main() -> None:
    subprocess.run(["modprobe", "-r", "null_blk"], check=False)
    subprocess.run(
        [
            "modprobe",
            "null_blk",
            "nr_devices=1",
            "queue_mode=2",
            "gb=4",
            f"mbps={MBPS}",
            "hw_queue_depth=2",
        ],
        check=True,
    )
    subprocess.run(["modprobe", "bfq"], check=False)
    with tempfile.TemporaryDirectory(prefix="nxr-io-") as t:
        tmp = Path(t)
        ratios: dict[str, list[float]] = {"without": [], "io.cost": [], "bfq": []}
        for i in range(RUNS):
            for how in ratios:
                scheduler("bfq" if how == "bfq" else "none")
                r = without() if how == "without" else with_nxr(tmp)
                ratio = r["heavy"] / max(r["light"], 1e-9)
                ratios[how].append(ratio)
                print(
                    f"run {i + 1} {how}: heavy {r['heavy']:.1f} MiB/s, light "
                    f"{r['light']:.1f} MiB/s, ratio {ratio:.2f}",
                    flush=True,
                )
    subprocess.run(["modprobe", "-r", "null_blk"], check=False)
    for how, rs in ratios.items():
        print(f"{how}: heavy/light {statistics.median(rs):.2f} (range {min(rs):.2f}-{max(rs):.2f})")


if __name__ == "__main__":
    main()
