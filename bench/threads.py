"""Thread sizing: two CPU inference processes side by side (demo.infer), first as
plain processes with their libraries' default thread counts (OpenBLAS: one thread per CPU
of the host, in each), then under nxrd, each on its own pinned cores with its thread count
sized to them. Throughput (inferences per second, both together) and p99 per inference.

    bash scripts/vm-run.sh '.venv/bin/python bench/threads.py'   # in the test VM (2 vCPUs)
    .venv/bin/python bench/threads.py [SECONDS]                  # as root, on cgroup v2

Target: nxr's sizing at least 1.3x the default's throughput.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.figures import percentile

ROOT = Path(__file__).resolve().parents[1]  # where `-m demo.infer` finds the demo package
BIN = Path(sys.executable).parent
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
CPUS = len(os.sched_getaffinity(0))


def worker(log: Path) -> list[str]:
    return [sys.executable, "-m", "demo.infer", "--log", str(log)]


def profile(logs: list[Path]) -> str:
    half = max(1, CPUS // 2)
    return "".join(
        f"[workloads.m{i}]\ncommand = {json.dumps(worker(log))}\n"  # JSON is valid TOML here
        f'cwd = {json.dumps(str(ROOT))}\nclass = "latency-critical"\ncpus = {half}\n\n'
        for i, log in enumerate(logs)
    )


def window(logs: list[Path]) -> tuple[float, list[float]]:
    """Wait until both run, then (inferences per second, durations) over SECONDS."""
    deadline = time.monotonic() + 600
    while not all(p.exists() and len(p.read_text().splitlines()) >= 3 for p in logs):
        if time.monotonic() > deadline:
            raise SystemExit("threads: the workers did not start")
        time.sleep(0.5)
    time.sleep(3)
    start = time.monotonic()
    time.sleep(SECONDS)
    end = time.monotonic()
    done = []
    for p in logs:
        for line in p.read_text().splitlines():
            t, d = map(float, line.split())
            if start <= t < end:
                done.append(d)
    return len(done) / (end - start), done


def plain(tmp: Path) -> tuple[float, list[float]]:
    logs = [tmp / "plain-a.log", tmp / "plain-b.log"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    procs = [
        subprocess.Popen(worker(log), env=env, cwd=ROOT, start_new_session=True) for log in logs
    ]
    try:
        return window(logs)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def under_nxrd(tmp: Path) -> tuple[float, list[float]]:
    logs = [tmp / "nxr-a.log", tmp / "nxr-b.log"]
    (tmp / "p.toml").write_text(profile(logs))
    proc = subprocess.Popen(
        [
            *(str(BIN / "nxrd"), "--profile", str(tmp / "p.toml")),
            *("--state-dir", str(tmp / "s"), "--socket", str(tmp / "nxrd.sock")),
            *("--cgroup-root", "/sys/fs/cgroup/nxr-bench-threads"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "nxrd.log").open("wb"),
    )
    try:
        return window(logs)
    finally:
        proc.terminate()
        proc.wait(timeout=300)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nxr-threads-") as tmp:
        runs = {
            "default threads, no pinning": plain(Path(tmp)),
            f"nxr: {max(1, CPUS // 2)} pinned CPU(s) each, threads sized": under_nxrd(Path(tmp)),
        }
    print(f"two inference processes on {CPUS} CPUs, {SECONDS:.0f} s each way")
    print(f"{'SET-UP':<40} {'INFERENCES/S':>12} {'P50':>8} {'P99':>8}")
    base = None
    for name, (rate, done) in runs.items():
        p50, p99 = percentile(done, 0.5), percentile(done, 0.99)
        print(f"{name:<40} {rate:>12.2f} {(p50 or 0) * 1000:>6.0f}ms {(p99 or 0) * 1000:>6.0f}ms")
        base = base or rate
    nxr_rate = list(runs.values())[1][0]
    print(f"throughput ratio nxr / default: {nxr_rate / base:.2f}x" if base else "")


if __name__ == "__main__":
    main()
