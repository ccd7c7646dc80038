"""Spawn latency: from the request to the workload's program running inside its cgroup.

    python3 bench/spawn.py [N]          # on a cgroup v2 host as root: a real scratch cgroup
    bash scripts/vm-run.sh '.venv/bin/python bench/spawn.py 300'   # in the test VM

Compares, over N spawns of `sleep 60` each: nxr's launcher (fork a shim, fork the workload,
join the cgroup, exec; returns once exec succeeded), plain subprocess.Popen (returns once
exec succeeded, no cgroup), and Popen with a preexec cgroup join. Where the host has no
usable cgroup v2 (developer machines here), a directory with a plain cgroup.procs file
stands in, and the output says so.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nxrd.kernel.launch import LaunchSpec, launch
from nxrd.kernel.spawn import spawn_in_cgroup

ARGV = ("sleep", "60")


def scratch_cgroup() -> tuple[Path, bool]:
    root = Path("/sys/fs/cgroup")
    controllers = root / "cgroup.controllers"  # only on a pure cgroup v2 mount
    if os.geteuid() == 0 and controllers.exists() and "cpu" in controllers.read_text().split():
        path = root / f"nxr-bench-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        return path, True
    path = Path(tempfile.mkdtemp()) / "stand-in"
    path.mkdir()
    (path / "cgroup.procs").touch()
    return path, False


def measure(n: int, spawn: Callable[[], Callable[[], None]]) -> list[float]:
    """Times of n spawns in ms; spawn() starts one and returns its cleanup."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        cleanup = spawn()
        times.append((time.perf_counter() - t0) * 1000)
        cleanup()
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    cg, real = scratch_cgroup()
    state = Path(tempfile.mkdtemp())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def nxr() -> Callable[[], None]:
        spec = LaunchSpec("bench", ARGV, cg, env, state / "s.json", state / "bench.log")
        started = launch(spec)

        def cleanup() -> None:
            os.killpg(started.pid, signal.SIGKILL)
            os.waitpid(started.shim_pid, 0)

        return cleanup

    def ender(p: subprocess.Popen[bytes]) -> Callable[[], None]:
        def cleanup() -> None:
            p.kill()
            p.wait()

        return cleanup

    def popen() -> Callable[[], None]:
        return ender(subprocess.Popen(ARGV, stdin=subprocess.DEVNULL))

    def popen_cgroup() -> Callable[[], None]:
        return ender(spawn_in_cgroup(ARGV, cg))

    results = {}
    for name, fn in (
        ("nxr launch (shim)", nxr),
        ("subprocess.Popen", popen),
        ("Popen + cgroup join", popen_cgroup),
    ):
        measure(max(5, n // 20), fn)  # warm-up
        results[name] = measure(n, fn)
    if real:
        cg.rmdir()
    where = "real cgroup v2" if real else "stand-in cgroup.procs file (no cgroup v2 here)"
    print(f"spawn latency, {n} spawns each, {where}, python {sys.version.split()[0]}")
    print(f"{'method':22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, t in results.items():
        q = statistics.quantiles(t, n=100)
        print(f"{name:22} {statistics.median(t):8.2f} {q[98]:8.2f} {max(t):8.2f}")
    base = statistics.median(results["subprocess.Popen"])
    print(f"ratio nxr/Popen (p50): {statistics.median(results['nxr launch (shim)']) / base:.2f}")


if __name__ == "__main__":
    main()
