"""nxrd's own cost: CPU time and resident memory of the daemon with 1, 10 and 50 workloads,
its controller ticking (one latency-critical workload with a pushed-latency SLO).

    bash scripts/vm-run.sh '.venv/bin/python bench/overhead.py'   # in the test VM
    .venv/bin/python bench/overhead.py [SECONDS [COUNT...]]       # as root, on cgroup v2

Each count runs a real nxrd over `sleep` workloads; once every workload is ready, nxrd's
CPU time (user + system, from /proc) is measured over SECONDS (default 30) while its loop
samples every workload's counters each second and the controller ticks every 500 ms.
Target: below 0.25% of one core per managed workload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
COUNTS = [int(a) for a in sys.argv[2:]] or [1, 10, 50]
PUSHER = (
    "import time; from nxrd.latency import LatencyReporter; r = LatencyReporter()\n"
    "while True: r(0.01); time.sleep(0.1)"
)


def profile(n: int) -> str:
    text = (
        '[controller]\nperiod = "500ms"\n\n[workloads.w00]\n'
        f"command = {json.dumps([sys.executable, '-c', PUSHER])}\n"
        'class = "latency-critical"\ncpus = 1\n'
        'slo = { p99 = "200ms", window = "5s", source = { push = true } }\n'
    )
    for i in range(1, n):
        text += f'\n[workloads.w{i:02d}]\ncommand = ["sleep", "600"]\nclass = "batch"\n'
    return text


def measure(n: int, tmp: Path) -> tuple[float, float, int]:
    """(CPU seconds per second, seconds to have every workload ready, RSS bytes)."""
    (tmp / "p.toml").write_text(profile(n))
    sock = tmp / "nxrd.sock"
    t0, tag = time.monotonic(), uuid.uuid4().hex[:6]
    proc = subprocess.Popen(
        [
            *(str(BIN / "nxrd"), "--profile", str(tmp / "p.toml"), "--state-dir", str(tmp / "s")),
            *("--socket", str(sock), "--cgroup-root", f"/sys/fs/cgroup/nxr-bench-{tag}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "nxrd.log").open("wb"),
    )
    try:
        while True:
            if proc.poll() is not None or time.monotonic() - t0 > 600:
                log = (tmp / "nxrd.log").read_text()
                raise SystemExit(f"nxrd did not start {n} workloads: {log}")
            r = subprocess.run(
                [str(BIN / "nxrctl"), "--socket", str(sock), "status"],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0 and r.stdout.count(" ready ") == n:
                break
            time.sleep(0.5)
        ready = time.monotonic() - t0
        time.sleep(5)  # let start-up work settle
        p = psutil.Process(proc.pid)
        c0, w0 = p.cpu_times(), time.monotonic()
        time.sleep(SECONDS)
        c1, w1 = p.cpu_times(), time.monotonic()
        cpu = (c1.user + c1.system - c0.user - c0.system) / (w1 - w0)
        return cpu, ready, p.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=300)


def main() -> None:
    print(f"nxrd over {SECONDS:.0f} s, controller ticking every 500 ms, counters read each 1 s")
    print(
        f"{'WORKLOADS':>9} {'CPU % OF A CORE':>15} {'PER WORKLOAD':>12} {'PER TICK':>9} "
        f"{'RSS':>7} {'READY AFTER':>11}"
    )
    for n in COUNTS:
        with tempfile.TemporaryDirectory(prefix="nxr-bench-") as tmp:
            cpu, ready, rss = measure(n, Path(tmp))
        print(
            f"{n:>9} {cpu * 100:>14.2f}% {cpu * 100 / n:>11.3f}% "
            f"{cpu * 0.5 * 1000:>7.1f}ms {rss / 2**20:>5.0f}MiB {ready:>10.1f}s",
            flush=True,
        )
    print("PER TICK: CPU time per 500 ms controller tick (everything nxrd did, divided by ticks)")


if __name__ == "__main__":
    main()
