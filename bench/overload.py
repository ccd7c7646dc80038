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
of those admitted (200), the share of 2 s windows whose admitted p99 is within the SLO
(after the first 2 s), and goodput (answers within the SLO per second) over capacity. The
front runs twice: one request in flight, then two (the model takes them one at a time, so
the second waits at the model instead of in HAProxy's queue, and the model never idles
while HAProxy hands it the next); capacity is also measured through the front, the same
way, so that goodput can be read against what the model answers by that path. A
next run sends half the requests as interactive and half as batch (X-Priority) at 120%
of capacity, each half reported on its own.

Admission by the controller: the front's queue sized by a generous operator (room for
ADMIT_QUEUE requests, the queue timeout at the SLO, so admitted requests can miss it),
a third of the requests each high, normal and low priority at 150%, first without an SLO,
then with `slo.source.front` (the latency clients see, queue included, as the front logs
it): the controller holds back the lowest priorities at the front while the SLO is at risk.
Per priority: as above, and the median time to a refusal (a refusal that comes fast lets a
balancer retry elsewhere); then the controller's decisions.
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
from collections.abc import Callable
from pathlib import Path

from nxrd.front.admin import FrontAdmin
from nxrd.model.paths import FRONT_SOCKET, front_dir

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = sys.executable
MODEL_PORT, FRONT_PORT = 18700, 18780
SLO_SERVICES = 6  # the SLO, in service times
LOAD = 1.5
SECONDS = float(os.environ.get("OVERLOAD_SECONDS", "20"))
WINDOW = 2.0  # seconds
ADMIT_QUEUE = 8


def get(port: int, timeout: float = 60, priority: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/infer", headers={"X-Priority": priority} if priority else {})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def service_time(port: int, clients: int = 8) -> float:
    """One over the model's capacity, as nxr runs it (its core, its health checks):
    requests answered (200) per second with clients that each send the next as soon as the
    last is answered (as many as keep the model busy without being refused)."""
    done = [0]
    end = time.monotonic() + 5
    started = time.monotonic() + 1  # the first second warms up, uncounted

    def client() -> None:
        while time.monotonic() < end:
            if get(port) == 200 and time.monotonic() > started:
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (end - started) / done[0]


def profile(work: int, service: float, inflight: int = 1, admission: bool = False) -> str:
    slo = SLO_SERVICES * service
    # queued: what may wait behind those in flight and still be answered within the SLO
    queue = SLO_SERVICES - 2 - inflight
    queue_timeout = slo - (inflight + 1) * service
    if admission:
        queue, queue_timeout = ADMIT_QUEUE, slo
    text = f"""
[workloads.chat]
command = ["{PY}", "{REPO / "bench/httpmodel.py"}", "--work", "{work}"]
class = "latency-critical"
cpus = 1
port = {MODEL_PORT}
ready = {{http = "http://127.0.0.1:{MODEL_PORT}/health", interval = "1s"}}

[workloads.chat.serve]
port = {FRONT_PORT}
inflight = {inflight}
queue = {queue}
queue_timeout = "{int(queue_timeout * 1000)}ms"
"""
    if admission:
        text += f"""
[workloads.chat.slo]
p99 = "{int(slo * 1000)}ms"
window = "5s"
source = {{front = true}}
"""
    return text


def open_loop(
    port: int,
    rate: float,
    seconds: float,
    seed: int,
    mix: tuple[str, ...] = (),
    on_last: Callable[[], object] | None = None,
) -> list[tuple[float, float, str]]:
    """(due, latency, outcome) per request: arrivals at Poisson times that never wait;
    with a mix, the i-th is sent with priority mix[i % len(mix)] (X-Priority), and the
    outcome says which ("interactive 200"). on_last is called once the last is sent."""
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
        priority = mix[i % len(mix)] if mix else None
        th = threading.Thread(target=one, args=(at, priority), daemon=True)
        th.start()
        threads.append(th)
    if on_last is not None:
        on_last()
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
            windows.setdefault(int(at // WINDOW), []).append(lat)
    within = len([w for w in windows.values() if pct(w, 0.99) <= slo])
    good = sum(1 for _, lat, o in rows if o == "200" and lat <= slo) / SECONDS
    errors = sum(n for o, n in counts.items() if o.startswith("error"))
    refused = [lat for _, lat, o in rows if o in ("429", "503")]
    print(f"{name}:")
    print(f"  answers: {json.dumps(dict(sorted(counts.items())))}; connection errors: {errors}")
    print(
        f"  p99 of all answered {pct(answered, 0.99) / slo:.2f}x SLO, of admitted (200) "
        + (f"{pct(admitted, 0.99) / slo:.2f}x SLO" if admitted else "none")
    )
    print(f"  windows with admitted p99 within the SLO: {within}/{len(windows)}")
    print(f"  goodput {good:.1f}/s = {good / capacity:.2f} of capacity", end="")
    print(f"; median time to a refusal {pct(refused, 0.5) * 1000:.0f} ms" if refused else "")


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


def model_cpu(d: Nxrd) -> Callable[[], float]:
    """The CPU seconds the model's leaf has used so far, read from its cpu.stat."""
    leaf = next(
        w["cgroup"]
        for w in json.loads(nxrctl(d, "status", "-o", "json"))["workloads"]
        if w["name"] == "chat"
    )
    stat = d.root / leaf / "cpu.stat"

    def seconds() -> float:
        name, value = stat.read_text().split("\n")[0].split()
        assert name == "usage_usec", name
        return int(value) / 1e6

    return seconds


def measured(
    port: int, rate: float, seed: int, cpu: Callable[[], float]
) -> tuple[list[tuple[float, float, str]], tuple[float, float]]:
    """open_loop's rows, and the model's CPU seconds while the requests arrived and until
    the last was answered: under emulation the model's CPU per answer drifts by a third
    from one measurement to the next (natively, by a fifth on this kind of machine), so
    each run is also read against what the model could answer at the speed it had then."""
    marks = [cpu()]
    rows = open_loop(port, rate, SECONDS, seed, on_last=lambda: marks.append(cpu()))
    return rows, (marks[1] - marks[0], cpu() - marks[0])


def during(rows: list[tuple[float, float, str]], slo: float, cpu: tuple[float, float]) -> None:
    """What the front made of the model's time: how busy it kept it while requests came,
    and its goodput against the answers the model gave per CPU second in this run (the
    front refuses the rest before they reach it)."""
    answered = sum(1 for _, _, o in rows if o == "200")
    good = sum(1 for _, lat, o in rows if o == "200" and lat <= slo) / SECONDS
    per_answer = cpu[1] / answered
    print(
        f"  the model's core busy {cpu[0] / SECONDS:.2f} of the time requests came;"
        f" {per_answer * 1000:.0f} ms of CPU an answer ({1 / per_answer:.1f}/s);"
        f" goodput {good * per_answer:.2f} of that capacity"
    )


def dropped_logs(admin: Path) -> int:
    """Log lines the front dropped since it started (HAProxy's DroppedLogs): a datagram
    socket's queue holds only net.unix.max_dgram_qlen of them while nxrd is busy."""
    info = FrontAdmin(admin).command("show info")
    return next(
        int(v) for k, _, v in (ln.partition(": ") for ln in info.splitlines()) if k == "DroppedLogs"
    )


def nxrctl(d: Nxrd, *args: str) -> str:
    out = subprocess.run(
        [str(BIN / "nxrctl"), "--socket", str(d.socket), *args], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"nxrctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def apply(d: Nxrd, tmp: Path, text: str) -> None:
    (tmp / "sized.toml").write_text(text)
    nxrctl(d, "apply", str(tmp / "sized.toml"))
    time.sleep(3)  # the front reloads its configuration (no restart)


def drained(service: float) -> None:
    """Wait until the model answers at its service time again: requests whose clients gave
    up straight at it are still worked through (nothing bounds its queue)."""
    for _ in range(600):
        began = time.monotonic()
        get(MODEL_PORT)
        if time.monotonic() - began < 2 * service:
            return
        time.sleep(1)
    raise SystemExit("the model never drained its backlog")


def main() -> None:
    work = int(os.environ.get("OVERLOAD_WORK", "20000"))
    tmp = Path(tempfile.mkdtemp(prefix="nxr-overload-"))
    tmp.chmod(0o755)  # the front's worker (user haproxy) logs to nxrd's socket in it
    d = Nxrd(tmp, profile(work, 1.0))  # the front is sized once the capacity is known
    try:
        d.ready(("chat", "chat.front"))
        service = service_time(MODEL_PORT)
        capacity, slo = 1 / service, SLO_SERVICES * service
        apply(d, tmp, profile(work, service, inflight=2))
        # as many clients as the front takes in: 2 in flight and 2 queued, none refused
        fronted = 1 / service_time(FRONT_PORT, clients=4)
        print(
            f"model: capacity {capacity:.1f}/s (one over it: {service * 1000:.1f} ms;"
            f" through the front, two in flight: {fronted:.1f}/s);"
            f" SLO {slo * 1000:.0f} ms; arrivals {LOAD * capacity:.1f}/s ({LOAD:.0%}),"
            f" {SECONDS:.0f} s"
        )
        rows, cpu = measured(MODEL_PORT, LOAD * capacity, 1, model_cpu(d))
        report("straight at the model", rows, slo, capacity)
        during(rows, slo, cpu)
        drained(service)
        for inflight in (1, 2):
            apply(d, tmp, profile(work, service, inflight))
            rows, cpu = measured(FRONT_PORT, LOAD * capacity, 1, model_cpu(d))
            report(f"through the front, {inflight} in flight", rows, slo, capacity)
            good = sum(1 for _, lat, o in rows if o == "200" and lat <= slo) / SECONDS
            print(f"  goodput {good / fronted:.2f} of the capacity through the front")
            during(rows, slo, cpu)
        # priorities: half interactive, half batch, at 120% of capacity
        apply(d, tmp, profile(work, service))
        rows = open_loop(FRONT_PORT, 1.2 * capacity, SECONDS, seed=2, mix=("interactive", "batch"))
        for priority in ("interactive", "batch"):
            mine = [(at, lat, o.split()[1]) for at, lat, o in rows if o.startswith(priority)]
            report(f"through the front at 120%, the {priority} half", mine, slo, capacity)
        front = next(
            w
            for w in json.loads(nxrctl(d, "status", "-o", "json"))["workloads"]
            if w["name"] == "chat.front"
        )
        print(f"  the front counted: {json.dumps(front['front'])}")
        print(f"  the front's restarts: {front['restarts']} (its configuration was reloaded)")
        admin = front_dir(tmp / "state", "chat.front") / FRONT_SOCKET
        print(f"  log lines the front could not send to nxrd: {dropped_logs(admin)}")
        admission(d, tmp, work, service)
        print(f"model: capacity {1 / service_time(MODEL_PORT):.1f}/s, measured again at the end")
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def admission(d: Nxrd, tmp: Path, work: int, service: float) -> None:
    capacity, slo = 1 / service, SLO_SERVICES * service
    mix = ("high", "normal", "low")
    for controller in (False, True):
        apply(d, tmp, profile(work, service, admission=True).split("[workloads.chat.slo]")[0])
        if controller:
            apply(d, tmp, profile(work, service, admission=True))
        since = int(json.loads(nxrctl(d, "events", "-o", "json").splitlines()[-1])["seq"])
        began = time.time() + 0.5
        rows = open_loop(FRONT_PORT, LOAD * capacity, SECONDS, seed=3, mix=mix)
        title = "with the controller (slo.source.front)" if controller else "without an SLO"
        print(f"admission at 150%, a third each high, normal, low, queue {ADMIT_QUEUE}, {title}:")
        for priority in mix:
            mine = [(at, lat, o.split()[1]) for at, lat, o in rows if o.startswith(priority)]
            report(f"  {priority}", mine, slo, capacity)
        for line in nxrctl(d, "events", "-o", "json").splitlines():
            e = json.loads(line)
            if e["seq"] > since and e["workload"] == "controller":
                print(f"  {e['time'] - began:6.1f} s  {e['old']} -> {e['new']}: {e['cause']}")


if __name__ == "__main__":
    main()
