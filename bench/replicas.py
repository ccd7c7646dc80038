"""Replicas: two replicas of a model on cores of their own against one replica on the same
number of cores, through the front; then one replica killed under load.

    NXR_VM_CPUS=4 bash scripts/vm-run.sh '.venv/bin/python -u bench/replicas.py'  # as root

The model is bench/httpmodel.py: one request at a time, a fixed amount of CPU work each,
as a model with one inference stream (its extra cores idle). Each set-up runs under nxrd
with its front (one request in flight per replica): 8 clients that each send the next
request as soon as the last is answered, for 10 s, give the throughput and the p99. Then,
with two replicas and open-loop Poisson arrivals at 60% of their joint capacity, replica
chat.0 is killed with SIGKILL: printed are the requests that failed (the one it held
should be the only one), and how long it took to be back in the rotation.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.overload import BIN, FRONT_PORT, MODEL_PORT, PY, REPO, Nxrd, get, open_loop, pct

WORK = int(os.environ.get("REPLICAS_WORK", "20000"))


def profile(replicas: int, cpus: int) -> str:
    return f"""
[workloads.chat]
command = ["{PY}", "{REPO / "bench/httpmodel.py"}", "--work", "{WORK}"]
class = "latency-critical"
cpus = {cpus}
replicas = {replicas}
port = {MODEL_PORT}
ready = {{http = "http://127.0.0.1:{MODEL_PORT}/health", interval = "1s"}}
restart = {{delay = "100ms"}}

[workloads.chat.serve]
port = {FRONT_PORT}
inflight = 1
queue = 64
queue_timeout = "30s"
"""


def closed_loop(port: int, clients: int, seconds: float) -> tuple[float, float]:
    """Requests answered per second, and their p99 in seconds."""
    times: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < end:
            began = time.monotonic()
            if get(port) == 200:
                with lock:
                    times.append(time.monotonic() - began)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(times) / seconds, pct(times, 0.99)


def status(d: Nxrd) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [str(BIN / "nxrctl"), "--socket", str(d.socket), "status", "-o", "json"],
        capture_output=True,
        text=True,
    )
    return {w["name"]: w for w in json.loads(out.stdout)["workloads"]}


def main() -> None:
    rates = {}
    for replicas, cpus in ((2, 1), (1, 2)):
        tmp = Path(tempfile.mkdtemp(prefix="nxr-replicas-"))
        d = Nxrd(tmp, profile(replicas, cpus))
        names = tuple(f"chat.{i}" for i in range(replicas))
        try:
            d.ready((*names, "chat.front"))
            cores = {n: status(d)[n]["cpus"] for n in names}
            rate, p99 = closed_loop(FRONT_PORT, 8, 10)
            rates[replicas] = rate
            print(
                f"{replicas} replica(s) x {cpus} core(s) {json.dumps(cores)}:"
                f" {rate:.1f} requests/s, p99 {p99 * 1000:.0f} ms"
            )
            if replicas == 2:
                killed(d, rate)
        finally:
            d.stop()
    print(f"two replicas against one on the same cores: {rates[2] / rates[1]:.2f}x the throughput")


def killed(d: Nxrd, capacity: float) -> None:
    """chat.0 killed under open-loop load at 60% of the two replicas' capacity."""
    before = status(d)["chat.0"]
    rows: list[tuple[float, float, str]] = []
    load = threading.Thread(
        target=lambda: rows.extend(open_loop(FRONT_PORT, 0.6 * capacity, 20, seed=3))
    )
    load.start()
    time.sleep(5)
    killed_at = time.monotonic()
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    back = None
    while time.monotonic() < killed_at + 60:
        now = status(d)
        replica = now["chat.0"]
        seen = replica.get("requests")
        rotation = seen.get("rotation") if isinstance(seen, dict) else None
        if replica["pid"] != before["pid"] and rotation in ("UP", "no check"):
            back = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    load.join()
    failed = [o for _, _, o in rows if o != "200"]
    latencies = [lat for _, lat, o in rows if o == "200"]
    rotation = f"after {back:.1f} s" if back is not None else "not within 60 s"
    print(
        f"  chat.0 killed under {0.6 * capacity:.1f} requests/s: {len(rows)} sent,"
        f" {len(failed)} failed ({json.dumps(sorted(set(failed)))}),"
        f" p50 {statistics.median(latencies) * 1000:.0f} ms; back in rotation {rotation}"
    )


if __name__ == "__main__":
    main()
