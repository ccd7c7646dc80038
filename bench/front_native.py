"""The front's cost at native speed: bench/overload.py's model and HAProxy configuration,
outside the VM.

    sudo .venv/bin/python -u bench/front_native.py      # on a Debian 12 host with haproxy

In the emulated VM the model's CPU per answer moves by a third with what the other vCPU
does, so what the front costs the model cannot be told from the emulator there. Here the
same pieces run as plain processes on this machine's own CPUs: the model
(bench/httpmodel.py) on CPU 1, HAProxy and the generator on CPU 0, and HAProxy runs the
configuration nxr renders for the profile bench/overload.py applies (nxrd/front/render.py),
its log lines drained from a datagram socket as nxrd would. There are no cgroups here (this
host has no cgroup v2 controllers): nothing of nxrd runs but its front's configuration.

Measured: the model's capacity with closed-loop clients straight at it, then Poisson
arrivals at 150% of it straight at the model and through the front (one request in flight,
then two; the front's capacity measured with closed-loop clients before each), each
reported as bench/overload.py does (goodput: answers within the SLO per second; the model's
CPU per answer in that run, and goodput against what the model could answer at that
speed), and the log lines the front dropped (HAProxy's DroppedLogs).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import overload  # the model, profile and generator under test
from nxrd.front.render import Server, render
from nxrd.model.paths import FRONT_CONFIG, FRONT_HELD, FRONT_SOCKET
from nxrd.profile.load import parse_profile

MODEL_CPU, FRONT_CPU = 1, 0


class Lines:
    """nxrd's end of the front's log: a datagram socket drained on a thread, counted."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.count = 0
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            self.sock.recv(65536)
            self.count += 1


def front(
    tmp: Path, work: int, service: float, inflight: int, lines: Path
) -> subprocess.Popen[bytes]:
    profile = parse_profile(overload.profile(work, service, inflight))
    wl = profile.workloads["chat"]
    (tmp / FRONT_CONFIG).write_text(render("chat", wl, [Server("chat", overload.MODEL_PORT)]))
    (tmp / FRONT_HELD).write_text("")
    env = {**os.environ, "NXR_LATENCY_SOCKET": str(lines)}
    argv = ["taskset", "-c", str(FRONT_CPU), "haproxy", "-W", "-db", "-f", FRONT_CONFIG]
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL)
    answering(overload.FRONT_PORT, "the front")
    return proc


def answering(port: int, what: str) -> None:
    for _ in range(100):
        try:
            overload.get(port)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} never answered")


def main() -> None:
    # a request of 100-150 ms here, as bench/overload.py's 20000 takes in the VM
    work = int(os.environ.get("OVERLOAD_WORK", "400000"))
    os.sched_setaffinity(0, {FRONT_CPU})  # the generator beside the front, as in the VM
    tmp = Path(tempfile.mkdtemp(prefix="nxr-front-native-"))
    tmp.chmod(0o755)  # the front's worker (user haproxy) logs to the socket in it
    lines = tmp / "latency.sock"
    received = Lines(lines)
    env = {**os.environ, "NXR_PORT": str(overload.MODEL_PORT)}
    model = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(MODEL_CPU),
            sys.executable,
            str(Path(__file__).parent / "httpmodel.py"),
            "--work",
            str(work),
        ],
        env=env,
    )
    used = psutil.Process(model.pid)

    def cpu() -> float:
        return float(sum(used.cpu_times()[:2]))  # user and system, the model's threads' too

    try:
        answering(overload.MODEL_PORT, "the model")
        service = overload.service_time(overload.MODEL_PORT)
        capacity, slo = 1 / service, overload.SLO_SERVICES * service
        print(
            f"model: capacity {capacity:.1f}/s (one over it: {service * 1000:.1f} ms);"
            f" SLO {slo * 1000:.0f} ms; arrivals {overload.LOAD * capacity:.1f}/s"
            f" ({overload.LOAD:.0%}), {overload.SECONDS:.0f} s"
        )
        rows, spent = overload.measured(overload.MODEL_PORT, overload.LOAD * capacity, 1, cpu)
        overload.report("straight at the model", rows, slo, capacity)
        overload.during(rows, slo, spent)
        for inflight in (1, 2):
            proc = front(tmp, work, service, inflight, lines)
            try:
                # closed-loop clients the front takes in without refusing any
                queue = overload.SLO_SERVICES - 2 - inflight
                fronted = 1 / overload.service_time(overload.FRONT_PORT, clients=inflight + queue)
                before = received.count
                rows, spent = overload.measured(
                    overload.FRONT_PORT, overload.LOAD * capacity, 1, cpu
                )
                time.sleep(0.5)
                overload.report(f"through the front, {inflight} in flight", rows, slo, capacity)
                good = sum(1 for _, lat, o in rows if o == "200" and lat <= slo) / overload.SECONDS
                print(
                    f"  capacity through the front {fronted:.1f}/s; goodput"
                    f" {good / fronted:.2f} of it"
                )
                overload.during(rows, slo, spent)
                print(
                    f"  log lines: {received.count - before} received for {len(rows)} requests;"
                    f" dropped by the front (since it started):"
                    f" {overload.dropped_logs(tmp / FRONT_SOCKET)}"
                )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        model.terminate()
        model.wait(timeout=30)


if __name__ == "__main__":
    main()
