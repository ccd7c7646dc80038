"""`nxrctl status` with 50 workloads: the whole command as an operator runs it.

    bash scripts/vm-run.sh '.venv/bin/python bench/status.py 5'  # a real nxrd in the test VM
    .venv/bin/python bench/status.py [RUNS]                      # any host (see below)

On a host with a usable cgroup v2 (as root), a real nxrd runs 50 `sleep` workloads in a
scratch subtree and `nxrctl status` is timed end to end (process start, imports, request,
nxrd reading every leaf's counters, formatting). Elsewhere nxrd runs on the in-memory host
(nxrd/kernel/fake_host.py: fake cgroupfs and processes, no kernel reads) and the output
says so. Also times `nxrctl --help` (start-up
alone), `status -o json`, and the API call alone through curl (the daemon's side: reading
every leaf's counters and answering). Target: well under one second.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_WORKLOADS = 50
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
BIN = Path(sys.executable).parent


def profile() -> str:
    return "".join(
        f'[workloads.w{i:02d}]\ncommand = ["sleep", "600"]\nclass = "batch"\n'
        for i in range(N_WORKLOADS)
    )


def real_cgroup_v2() -> bool:
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    return os.geteuid() == 0 and controllers.exists() and "cpu" in controllers.read_text().split()


def time_runs(argv: list[str], runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(max(runs, 5) + 3):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    return out[3:]  # the first runs warm the page cache


def with_real_nxrd(tmp: Path) -> tuple[str, Callable[[], None]]:
    root = Path(f"/sys/fs/cgroup/nxr-bench-{uuid.uuid4().hex[:6]}")
    (tmp / "p.toml").write_text(profile())
    sock = tmp / "nxrd.sock"
    proc = subprocess.Popen(
        [
            str(BIN / "nxrd"),
            "--profile",
            str(tmp / "p.toml"),
            "--state-dir",
            str(tmp / "s"),
            "--socket",
            str(sock),
            "--cgroup-root",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "nxrd.log").open("wb"),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r = subprocess.run(
            [str(BIN / "nxrctl"), "--socket", str(sock), "status"], capture_output=True, text=True
        )
        if r.returncode == 0 and r.stdout.count(" ready ") == N_WORKLOADS:
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        raise SystemExit(f"nxrd did not start 50 workloads: {(tmp / 'nxrd.log').read_text()}")

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=300)

    return str(sock), stop


def with_fake_runtime(tmp: Path) -> tuple[str, Callable[[], None]]:
    """nxrd itself, built on the in-memory host (fake cgroups and processes)."""
    import select

    from nxrd.daemon.core import Daemon
    from nxrd.kernel.discovery import discover
    from nxrd.kernel.fake_host import FakeHost

    (tmp / "p.toml").write_text(profile())
    sock = str(tmp / "nxrd.sock")
    host = FakeHost(discover(gpus=False))
    d = Daemon([str(tmp / "p.toml")], str(tmp / "state"), socket_path=sock, host=host)
    d.start()
    d.sup.tick(0.0)
    server = d.api
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            if select.select([server.fileno()], [], [], 0.05)[0]:
                server.serve_ready()

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def stop() -> None:
        done.set()
        t.join()
        d.close()

    return sock, stop


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nxr-bench-"))
    real = real_cgroup_v2()
    sock, stop = (with_real_nxrd if real else with_fake_runtime)(tmp)
    ctl = [str(BIN / "nxrctl"), "--socket", sock]
    try:
        results = {
            "nxrctl --help (start-up only)": time_runs([str(BIN / "nxrctl"), "--help"]),
            "nxrctl status": time_runs([*ctl, "status"]),
            "nxrctl status -o json": time_runs([*ctl, "status", "-o", "json"]),
        }
        if shutil.which("curl"):
            curl = ["curl", "-sS", "-o", "/dev/null", "--unix-socket", sock]
            results["curl GET /v1/workloads (API only)"] = time_runs(
                [*curl, "http://localhost/v1/workloads"], runs=max(RUNS, 30)
            )
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)
    where = "real nxrd, real cgroup v2" if real else "fake host: no kernel reads (no cgroup v2)"
    print(f"nxrctl with {N_WORKLOADS} workloads, {where}")
    print(f"{'command':36} {'runs':>5} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    for name, t in results.items():
        q = statistics.quantiles(t, n=10, method="inclusive")  # never beyond the max
        print(f"{name:36} {len(t):5d} {statistics.median(t):8.1f} {q[8]:8.1f} {max(t):8.1f}")
    base = statistics.median(results["nxrctl --help (start-up only)"])
    print(f"ratio status/--help (p50): {statistics.median(results['nxrctl status']) / base:.2f}")


if __name__ == "__main__":
    main()
