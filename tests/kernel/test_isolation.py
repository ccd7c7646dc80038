"""The kernel enforces what nxr writes: pinning, memory limits, CPU bandwidth."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nxrd.kernel.spawn import spawn_in_cgroup

# A workload that starts threads and forks a grandchild that starts threads too.
FORKER = textwrap.dedent(
    """
    import os, sys, threading, time
    def spin():
        time.sleep(60)
    for _ in range(3):
        threading.Thread(target=spin, daemon=True).start()
    if os.fork() == 0:
        for _ in range(2):
            threading.Thread(target=spin, daemon=True).start()
        time.sleep(60)
        os._exit(0)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def _leaf(scratch: Path, name: str, files: dict[str, str]) -> Path:
    leaf = scratch / name
    leaf.mkdir()
    for filename, value in files.items():
        (leaf / filename).write_text(value)
    return leaf


def _status_field(pid: int, tid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} missing for {pid}/{tid}")


def test_cpuset_pins_every_process_and_thread(scratch: Path) -> None:
    leaf = _leaf(scratch, "pinned", {"cpuset.cpus": "1", "cpuset.mems": "0"})
    proc = spawn_in_cgroup([sys.executable, "-c", FORKER], leaf, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5)  # let the grandchild start its threads
        pids = [int(p) for p in (leaf / "cgroup.procs").read_text().split()]
        assert proc.pid in pids and len(pids) == 2, pids  # the workload and its grandchild
        tasks = [(pid, int(t.name)) for pid in pids for t in Path(f"/proc/{pid}/task").iterdir()]
        assert len(tasks) >= 4 + 3  # main+3 threads, grandchild+2 threads
        for pid, tid in tasks:
            assert _status_field(pid, tid, "Cpus_allowed_list") == "1", (pid, tid)
    finally:
        (leaf / "cgroup.kill").write_text("1")
        proc.wait(timeout=10)


def test_memory_max_oom_kills_an_overallocating_process(scratch: Path) -> None:
    leaf = _leaf(scratch, "small", {"memory.max": str(64 << 20), "memory.swap.max": "0"})
    hog = "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')"
    proc = spawn_in_cgroup([sys.executable, "-c", hog], leaf, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert b"survived" not in out
    events = dict(line.split() for line in (leaf / "memory.events").read_text().splitlines())
    assert int(events["oom_kill"]) >= 1


def test_cpu_max_throttles_a_busy_loop(scratch: Path) -> None:
    leaf = _leaf(scratch, "capped", {"cpu.max": "20000 100000"})
    busy = "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end: pass"
    start = time.monotonic()
    proc = spawn_in_cgroup([sys.executable, "-c", busy], leaf)
    proc.wait(timeout=120)
    wall = time.monotonic() - start
    stat = dict(line.split() for line in (leaf / "cpu.stat").read_text().splitlines())
    assert int(stat["nr_throttled"]) > 0
    assert int(stat["throttled_usec"]) > 0
    # 20% of one CPU: usage stays near a fifth of the wall time (generous for emulation).
    assert int(stat["usage_usec"]) / 1e6 < 0.35 * wall
