"""Overload: a latency-critical model driven at 150% of its capacity by an open-loop
generator, straight at the model and then through the front nxr runs for it.

    bash scripts/vm-run.sh '.venv/bin/python -u bench/overload.py'   # in the test VM, as root

The model (bench/httpmodel.py) answers one request at a time, each a fixed amount of CPU
work. Its capacity is measured first, as nxr runs it (on its core, with the front's health
checks); the SLO is six times one over it, and the front is then sized from it and applied
with `nxrctl apply` (a hitless reload): one request in flight (OVERLOAD_INFLIGHT), a queue
of what can wait and still finish within the SLO, and that wait as the queue timeout.
Arrivals are Poisson at 1.5x capacity and never wait for answers; each latency counts from
when its request was due (closed-loop tools such as hey and wrk hide queueing under
overload). Printed per run: answers by status, connection errors, p99 of all answered and
of those admitted (200), the share of 1 s windows whose admitted p99 is within the SLO
(after the first 2 s), and goodput (answers within the SLO per second) over capacity. A
third run sends half the requests as interactive and half as batch (X-Priority) at 120%
of capacity, each half reported on its own.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = sys.executable
MODEL_PORT, FRONT_PORT = 18700, 18780
SLO_SERVICES = 6  # the SLO, in service times
LOAD = 1.5
SECONDS = float(os.environ.get("OVERLOAD_SECONDS", "20"))
INFLIGHT = int(os.environ.get("OVERLOAD_INFLIGHT", "1"))


def get(port: int, timeout: float = 60, priority: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/infer", headers={"X-Priority": priority} if priority else {})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def service_time(port: int) -> float:
    """One over the model's capacity, as nxr runs it (its core, its health checks):
    requests answered per second with 8 clients that each send the next as soon as the
    last is answered (the model never idles)."""
    done = [0]
    end = time.monotonic() + 5
    started = time.monotonic() + 1  # the first second warms up, uncounted

    def client() -> None:
        while time.monotonic() < end:
            get(port)
            if time.monotonic() > started:
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (end - started) / done[0]


def profile(work: int, service: float) -> str:
    slo = SLO_SERVICES * service
    # queued: what may wait behind those in flight and still be answered within the SLO
    queue = SLO_SERVICES - 2 - INFLIGHT
    return f"""
[workloads.chat]
command = ["{PY}", "{REPO / "bench/httpmodel.py"}", "--work", "{work}"]
class = "latency-critical"
cpus = 1
port = {MODEL_PORT}
ready = {{http = "http://127.0.0.1:{MODEL_PORT}/health", interval = "1s"}}

[workloads.chat.serve]
port = {FRONT_PORT}
inflight = {INFLIGHT}
queue = {queue}
queue_timeout = "{int((slo - (INFLIGHT + 1) * service) * 1000)}ms"
"""


def open_loop(
    port: int, rate: float, seconds: float, seed: int, mixed: bool = False
) -> list[tuple[float, float, str]]:
    """(due, latency, outcome) per request: arrivals at Poisson times that never wait;
    mixed: every other one is sent as interactive, the others as batch (X-Priority), and
    the outcome says which ("interactive 200")."""
    rng = random.Random(seed)
    due, t = [], 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        due.append(t)
    out: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def one(at: float, priority: str | None) -> None:
        try:
            outcome = str(get(port, priority=priority))
        except OSError as e:
            outcome = f"error {type(e).__name__}"
        if priority:
            outcome = f"{priority} {outcome}"
        with lock:
            out.append((at, time.monotonic() - (start + at), outcome))

    threads = []
    for i, at in enumerate(due):
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        priority = ("interactive", "batch")[i % 2] if mixed else None
        th = threading.Thread(target=one, args=(at, priority), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout=120)
    return out


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def report(name: str, rows: list[tuple[float, float, str]], slo: float, capacity: float) -> None:
    counts: dict[str, int] = {}
    for _, _, outcome in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
    answered = [lat for _, lat, o in rows if not o.startswith("error")]
    admitted = [lat for _, lat, o in rows if o == "200"]
    windows: dict[int, list[float]] = {}
    for at, lat, o in rows:
        if o == "200" and at >= 2:
            windows.setdefault(int(at), []).append(lat)
    within = len([w for w in windows.values() if pct(w, 0.99) <= slo])
    good = sum(1 for _, lat, o in rows if o == "200" and lat <= slo) / SECONDS
    errors = sum(n for o, n in counts.items() if o.startswith("error"))
    print(f"{name}:")
    print(f"  answers: {json.dumps(dict(sorted(counts.items())))}; connection errors: {errors}")
    print(
        f"  p99 of all answered {pct(answered, 0.99) / slo:.2f}x SLO, of admitted (200)"
        f" {pct(admitted, 0.99) / slo:.2f}x SLO"
    )
    print(f"  windows with admitted p99 within the SLO: {within}/{len(windows)}")
    print(f"  goodput {good:.1f}/s = {good / capacity:.2f} of capacity")


class Nxrd:
    def __init__(self, tmp: Path, text: str) -> None:
        self.root = Path(f"/sys/fs/cgroup/nxr-overload-{uuid.uuid4().hex[:6]}")
        (tmp / "p.toml").write_text(text)
        self.socket = tmp / "nxrd.sock"
        argv = [str(BIN / "nxrd"), "--profile", str(tmp / "p.toml"), "--state-dir"]
        argv += [str(tmp / "state"), "--socket", str(self.socket), "--cgroup-root", str(self.root)]
        self.log = tmp / "nxrd.log"
        self.proc = subprocess.Popen(argv, stderr=self.log.open("wb"), umask=0o077)

    def ready(self, names: tuple[str, ...]) -> None:
        for _ in range(600):
            out = subprocess.run(
                [str(BIN / "nxrctl"), "--socket", str(self.socket), "status", "-o", "json"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                states = {w["name"]: w["state"] for w in json.loads(out.stdout)["workloads"]}
                if all(states.get(n) == "ready" for n in names):
                    return
            time.sleep(0.2)
        raise SystemExit(f"not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        subprocess.run(["find", str(self.root), "-depth", "-type", "d", "-delete"], check=False)


def main() -> None:
    work = int(os.environ.get("OVERLOAD_WORK", "20000"))
    tmp = Path(tempfile.mkdtemp(prefix="nxr-overload-"))
    d = Nxrd(tmp, profile(work, 1.0))  # the front is sized once the capacity is known
    try:
        d.ready(("chat", "chat.front"))
        service = service_time(MODEL_PORT)
        capacity, slo = 1 / service, SLO_SERVICES * service
        print(
            f"model: capacity {capacity:.1f}/s (one over it: {service * 1000:.1f} ms);"
            f" SLO {slo * 1000:.0f} ms; arrivals {LOAD * capacity:.1f}/s ({LOAD:.0%}),"
            f" {SECONDS:.0f} s"
        )
        (tmp / "sized.toml").write_text(profile(work, service))
        applied = subprocess.run(
            [str(BIN / "nxrctl"), "--socket", str(d.socket), "apply", str(tmp / "sized.toml")],
            capture_output=True,
            text=True,
        )
        if applied.returncode != 0:
            raise SystemExit(f"apply failed: {applied.stdout}{applied.stderr}")
        time.sleep(3)  # the front reloads its configuration (no restart)
        runs = (("straight at the model", MODEL_PORT), ("through the front", FRONT_PORT))
        for name, port in runs:
            rows = open_loop(port, LOAD * capacity, SECONDS, seed=1)
            report(name, rows, slo, capacity)
            time.sleep(2)
        # priorities: half interactive, half batch, at 120% of capacity
        rows = open_loop(FRONT_PORT, 1.2 * capacity, SECONDS, seed=2, mixed=True)
        for priority in ("interactive", "batch"):
            mine = [(at, lat, o.split()[1]) for at, lat, o in rows if o.startswith(priority)]
            report(f"through the front at 120%, the {priority} half", mine, slo, capacity)
        fronts = json.loads(
            subprocess.run(
                [str(BIN / "nxrctl"), "--socket", str(d.socket), "status", "-o", "json"],
                capture_output=True,
                text=True,
            ).stdout
        )
        front = next(w for w in fronts["workloads"] if w["name"] == "chat.front")
        print(f"  the front counted: {json.dumps(front['front'])}")
        print(f"  the front's restarts: {front['restarts']} (its configuration was reloaded)")
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
