"""Whether one vCPU of the test VM slows the other: a probe on CPU 0 while CPU 1 is idle,
busy, or busy a quarter of the time, three rounds. Probes: a fixed pure-Python loop, one
request of the synthetic MLP the demo's server ran before 1c3e019 (time per call), and a
1 ms sleep (gaps over 20 ms).
Run inside the VM (bash scripts/vm-run.sh '.venv/bin/python bench/vcpus.py'), about 6 min.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the demo package, not installed

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy: one thread, like the batch job's

LOADS = {
    "idle": None,
    "python loop": "while 1: pass",
    "numpy loop": (  # the batch job's block
        "import numpy as np\n"
        "a = np.random.default_rng(2).standard_normal((160, 160), dtype=np.float32); b = a\n"
        "while 1: b = np.tanh(a @ b)"
    ),
    "numpy 25% duty": (
        "import numpy as np, time\n"
        "a = np.random.default_rng(2).standard_normal((160, 160), dtype=np.float32); b = a\n"
        "while 1:\n"
        "    e = time.monotonic() + 0.025\n"
        "    while time.monotonic() < e: b = np.tanh(a @ b)\n"
        "    time.sleep(0.075)"
    ),
}


def timed(work, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        work()
        out.append(time.perf_counter() - t)
        time.sleep(0.01)
    return out


def python_work() -> None:
    s = 0
    for i in range(20000):
        s += i * i


def _spread(times: list[float]) -> str:
    """Median/p99 in ms."""
    return f"{statistics.median(times) * 1000:.1f}/{times[int(len(times) * 0.99)] * 1000:.1f}"


def sleep_gaps(seconds: float) -> list[float]:
    gaps, last, end = [], time.monotonic(), time.monotonic() + seconds
    while last < end:
        time.sleep(0.001)
        now = time.monotonic()
        if now - last > 0.02:
            gaps.append(now - last)
        last = now
    return gaps


def main() -> None:
    from demo.model import MLP

    model = MLP(256)  # the model and request size of the demo's former MLP server
    x = model.batch(8)

    def numpy_work() -> None:
        model(x)

    os.sched_setaffinity(0, {0})
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(f"{'CPU 1':<16} {'PYTHON p50/p99':>16} {'SERVER p50/p99':>16} {'SLEEP >20ms (max)':>20}")
    for _ in range(3):
        for name, code in LOADS.items():
            load = None
            if code is not None:
                load = subprocess.Popen(
                    ["taskset", "-c", "1", sys.executable, "-c", code],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            try:
                py = sorted(timed(python_work, seconds))
                nu = sorted(timed(numpy_work, seconds))
                gaps = sleep_gaps(seconds)
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
            print(
                f"{name:<16} {_spread(py):>16} {_spread(nu):>16} "
                f"{len(gaps):>14} ({max(gaps, default=0.0) * 1000:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
