"""A memory bomb beside a latency-critical server, in the test VM: the server's latency
while a batch job takes all the machine's memory, again and again.

    bash scripts/vm-run.sh '.venv/bin/python -u bench/memory_bomb.py'   # in the test VM, as root

The server (Python, 64 MiB working set, each request reads 1 MiB of it) answers a client
sending a request every 20 ms. Beside it a batch job takes memory 32 MiB every 50 ms until
it is killed, and starts again 3 s later, for SECONDS. Three set-ups, in turn:

- plain: both as ordinary processes, as on a host without nxr (the kernel's OOM killer
  ends each round);
- nxr, guard off: both under nxrd (the server latency-critical on its own core, its
  memory protected by memory.low; the job batch), `memory_guard = { enabled = false }`;
- nxr: the same with the memory guard at its defaults (available 10%).

First the server alone under nxrd, without the bomb: the latency it has unloaded.

Printed per set-up: request latency p50, p99 and max over the whole run, each request
timed from when it was due (a request that fails counts as at least 5 s), failed
requests, rounds of the bomb, the kernel's OOM kills (/proc/vmstat oom_kill), and whether
the server kept its process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from nxrd_run import running

PY = sys.executable
SECONDS = int(os.environ.get("BOMB_SECONDS", "40"))
PORT = 8391
SLO = 0.050  # p99 the server is meant to keep

SERVER = """
import http.server, sys
ws = bytearray(64 << 20)
for i in range(0, len(ws), 4096):
    ws[i] = 1
at = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        start = at[0]
        total = sum(ws[start:start + (1 << 20):4096])  # 256 pages of its working set
        at[0] = (start + (1 << 20)) % len(ws)
        body = str(total).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

BOMB = """
import sys, time
with open(sys.argv[1], "a") as f:
    print("round", file=f, flush=True)
held = []
while True:
    held.append(bytearray(b"\x01") * (32 << 20))  # every page written
    time.sleep(0.05)
"""


def oom_kills() -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def server_pid(port: int) -> int | None:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    text = out.stdout
    if "pid=" not in text:
        return None
    return int(text.split("pid=")[1].split(",")[0])


def wait_up(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not answer")


def measure(port: int, seconds: float) -> tuple[list[float], int]:
    """Latencies of a request due every 20 ms for seconds, and how many failed. Each is
    timed from when it was due, not when it could be sent: a server stalled for 2 s
    delays the 100 requests due meanwhile, not one (no coordinated omission)."""
    latencies, failed = [], 0
    end = time.monotonic() + seconds
    due = time.monotonic()
    while due < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            latencies.append(time.monotonic() - due)
        except OSError:
            failed += 1
            latencies.append(max(5.0, time.monotonic() - due))
        due += 0.02
        time.sleep(max(0.0, due - time.monotonic()))
    return latencies, failed


def plain(tmp: Path, rounds: Path) -> dict[str, object]:
    server = subprocess.Popen([PY, str(tmp / "server.py"), str(PORT)])
    stop = threading.Event()

    def bombs() -> None:
        while not stop.is_set():
            bomb = subprocess.Popen([PY, str(tmp / "bomb.py"), str(rounds)])
            while bomb.poll() is None and not stop.is_set():
                time.sleep(0.1)
            if bomb.poll() is None:
                bomb.kill()
                bomb.wait()
            stop.wait(3)

    try:
        wait_up(PORT)
        pid = server.pid
        before = oom_kills()
        thread = threading.Thread(target=bombs)
        thread.start()
        latencies, failed = measure(PORT, SECONDS)
        stop.set()
        thread.join()
        kept = server.poll() is None and server_pid(PORT) == pid
        return summary(latencies, failed, rounds, oom_kills() - before, kept)
    finally:
        server.kill()
        server.wait()


def under_nxr(tmp: Path, rounds: Path, guard: bool, bomb: bool = True) -> dict[str, object]:
    host = "" if guard else "[host]\nmemory_guard = { enabled = false }\n"
    text = (
        f"{host}[workloads.chat]\n"
        f'command = ["{PY}", "{tmp}/server.py", "{PORT}"]\n'
        'class = "latency-critical"\ncpus = 1\nmemory_max = "256M"\n'
    )
    if bomb:
        text += (
            f'[workloads.bomb]\ncommand = ["{PY}", "{tmp}/bomb.py", "{rounds}"]\n'
            'class = "batch"\n'
            'restart = { policy = "always", delay = "3s", max_delay = "3s", max_restarts = 1000 }\n'
        )
    with running(tmp, text):
        wait_up(PORT)
        pid = server_pid(PORT)
        rounds.write_text("")  # the rounds while measuring
        before = oom_kills()
        latencies, failed = measure(PORT, SECONDS)
        kept = pid is not None and server_pid(PORT) == pid
        return summary(latencies, failed, rounds, oom_kills() - before, kept)


def summary(
    latencies: list[float], failed: int, rounds: Path, kernel_kills: int, kept: bool
) -> dict[str, object]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max_ms": ordered[-1] * 1000,
        "requests": len(ordered),
        "failed": failed,
        "rounds": len(rounds.read_text().splitlines()),
        "kernel_oom_kills": kernel_kills,
        "server_kept": kept,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "server.py").write_text(SERVER)
        (tmp / "bomb.py").write_text(BOMB)
        results = {}
        for name, run in (
            ("alone (nxr, no bomb)", lambda r: under_nxr(tmp, r, guard=True, bomb=False)),
            ("plain", lambda r: plain(tmp, r)),
            ("nxr, guard off", lambda r: under_nxr(tmp, r, guard=False)),
            ("nxr", lambda r: under_nxr(tmp, r, guard=True)),
        ):
            rounds = tmp / f"rounds-{len(results)}"
            rounds.write_text("")
            results[name] = run(rounds)
            print(name, results[name], flush=True)
        print(f"\nSLO p99 {SLO * 1000:.0f} ms; {SECONDS} s per set-up")
        head = "| set-up | p50 | p99 | max | failed | rounds | kernel OOM kills | server kept |"
        print(head)
        print("|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(
                f"| {name} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms "
                f"| {r['failed']} of {r['requests']} | {r['rounds']} | {r['kernel_oom_kills']} "
                f"| {'yes' if r['server_kept'] else 'no'} |"
            )


if __name__ == "__main__":
    main()
