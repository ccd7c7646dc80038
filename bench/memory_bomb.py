"""A memory bomb beside a latency-critical server, in the test VM: the server's latency
while a batch job takes all the machine's memory, again and again.

    NXR_VM_CPUS=3 bash scripts/vm-run.sh '.venv/bin/python -u bench/memory_bomb.py'  # test VM, root

The server (Python, 64 MiB working set, each request reads 1 MiB of it) answers a client
sending a request every 20 ms. Beside it a batch job takes memory 32 MiB every 50 ms until
it is killed, and starts again 3 s later, for SECONDS. The client has CPU 0 to itself
(with nxrd, which reserves it): a client sharing a CPU with the bomb measures its own
wait for that CPU, not the server's latency, as a remote client would not. Three set-ups,
in turn:

- plain: both as ordinary processes, as on a host without nxr (the kernel's OOM killer
  ends each round);
- nxr, guard off: both under nxrd (the server latency-critical on its own core, its
  memory protected by memory.low; the job batch), `memory_guard = { enabled = false }`;
- nxr: the same with the memory guard at its defaults (available 10%).

First the server alone under nxrd, without the bomb: the latency it has unloaded.
BOMB_SETUPS=alone,plain,guard-off,nxr chooses set-ups, BOMB_RUNS=N repeats them (for
medians), BOMB_SECONDS sets the time each runs. Two more, not run unless chosen:
nxr-early (the guard at `available = BOMB_EARLY`, 20 by default: killing earlier, further
from the kernel's reclaim) and hog (under nxr, a batch job that only spins on its CPU, in
the bomb's place: the control for what three emulated vCPUs on two host cores cost).

Printed per set-up: request latency p50, p99 and max over the whole run, each request
timed from when it was due (a request that fails counts as at least 5 s); the p99 of
the server's own time on a request (from its handler's start to its answer) and of how
late the client sent them (parts of the latency, not the rest of it); failed requests,
rounds of the bomb, the kernel's OOM kills (/proc/vmstat oom_kill), and whether the
server kept its process.
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
from typing import NamedTuple

from nxrd_run import running

PY = sys.executable
SECONDS = int(os.environ.get("BOMB_SECONDS", "40"))
RUNS = int(os.environ.get("BOMB_RUNS", "1"))  # each set-up this many times, in turn
PORT = 8391
CLIENT_CPU = 0
SLO = 0.050  # p99 the server is meant to keep

SERVER = """
import http.server, sys, time
ws = bytearray(64 << 20)
for i in range(0, len(ws), 4096):
    ws[i] = 1
at = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        began = time.monotonic()
        start = at[0]
        total = sum(ws[start:start + (1 << 20):4096])  # 256 pages of its working set
        at[0] = (start + (1 << 20)) % len(ws)
        body = f"{total} {time.monotonic() - began:.6f}".encode()  # its own time
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

# The control: a batch job as busy on its CPU as the bomb, without taking memory. Under
# emulation each vCPU is a host thread, and 3 share the host's 2 cores: what this costs
# the client is the emulator's share of the bomb's figure, not the memory's.
HOG = """
import sys
with open(sys.argv[1], "a") as f:
    print("round", file=f, flush=True)
x = 0
while True:
    x = (x * 1103515245 + 12345) & 0xFFFFFFFF
"""
EARLY = int(os.environ.get("BOMB_EARLY", "20"))  # the guard's `available` for "nxr-early"


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


class Measured(NamedTuple):
    latencies: list[float]  # from when each request was due to its answer
    failed: int
    own: list[float]  # the server's own time on each answered request
    late: list[float]  # how late the client sent each, behind its due time
    faults: int = 0  # the client's major page faults meanwhile (its code read back in)
    stalled: float = 0.0  # seconds some task waited on memory meanwhile (PSI "some" total)


def measure(port: int, seconds: float) -> Measured:
    """A request due every 20 ms for seconds. Each is timed from when it was due, not
    when it could be sent: a server stalled for 2 s delays the 100 requests due
    meanwhile, not one (no coordinated omission)."""
    os.sched_setaffinity(0, {CLIENT_CPU})  # this thread only; its children keep all CPUs
    m = Measured([], 0, [], [])
    faults, stalled = major_faults(), memory_stall()
    end = time.monotonic() + seconds
    due = time.monotonic()
    while due < end:
        m.late.append(time.monotonic() - due)
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            m.latencies.append(time.monotonic() - due)
            m.own.append(float(body.split()[1]))
        except OSError:
            m = m._replace(failed=m.failed + 1)
            m.latencies.append(max(5.0, time.monotonic() - due))
        due += 0.02
        time.sleep(max(0.0, due - time.monotonic()))
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    return m._replace(faults=major_faults() - faults, stalled=memory_stall() - stalled)


def memory_stall() -> float:
    some = Path("/proc/pressure/memory").read_text().splitlines()[0]
    return int(some.rsplit("total=", 1)[1]) / 1e6


def major_faults() -> int:
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[9])


def off_client_cpu() -> None:
    """For plain processes: every CPU but the client's, as nxrd's reserved_cpus does."""
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {CLIENT_CPU})


def plain(tmp: Path, rounds: Path) -> dict[str, object]:
    server = subprocess.Popen([PY, str(tmp / "server.py"), str(PORT)], preexec_fn=off_client_cpu)
    stop = threading.Event()

    def bombs() -> None:
        while not stop.is_set():
            bomb = subprocess.Popen(
                [PY, str(tmp / "bomb.py"), str(rounds)], preexec_fn=off_client_cpu
            )
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
        measured = measure(PORT, SECONDS)
        stop.set()
        thread.join()
        kept = server.poll() is None and server_pid(PORT) == pid
        return summary(measured, rounds, oom_kills() - before, kept)
    finally:
        server.kill()
        server.wait()


def under_nxr(
    tmp: Path,
    rounds: Path,
    guard: bool,
    bomb: bool = True,
    job: str = "bomb.py",
    available: int = 10,
) -> dict[str, object]:
    guarding = "" if guard else "memory_guard = { enabled = false }\n"
    if guard and available != 10:
        guarding = f"memory_guard = {{ available = {available} }}\n"
    text = (
        f'[host]\nreserved_cpus = "{CLIENT_CPU}"\n{guarding}[workloads.chat]\n'
        f'command = ["{PY}", "{tmp}/server.py", "{PORT}"]\n'
        'class = "latency-critical"\ncpus = 1\nmemory_max = "256M"\n'
    )
    if bomb:
        text += (
            f'[workloads.bomb]\ncommand = ["{PY}", "{tmp}/{job}", "{rounds}"]\n'
            'class = "batch"\n'
            'restart = { policy = "always", delay = "3s", max_delay = "3s", max_restarts = 1000 }\n'
        )
    with running(tmp, text):
        wait_up(PORT)
        pid = server_pid(PORT)
        rounds.write_text("")  # the rounds while measuring
        before = oom_kills()
        measured = measure(PORT, SECONDS)
        kept = pid is not None and server_pid(PORT) == pid
        return summary(measured, rounds, oom_kills() - before, kept)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1] if ordered else 0.0


def summary(m: Measured, rounds: Path, kernel_kills: int, kept: bool) -> dict[str, object]:
    return {
        "p50_ms": statistics.median(m.latencies) * 1000,
        "p99_ms": p99(m.latencies) * 1000,
        "max_ms": max(m.latencies) * 1000,
        "own_p99_ms": p99(m.own) * 1000,
        "late_p99_ms": p99(m.late) * 1000,
        "client_major_faults": m.faults,
        "memory_stall_s": round(m.stalled, 3),
        "requests": len(m.latencies),
        "failed": m.failed,
        "rounds": len(rounds.read_text().splitlines()),
        "kernel_oom_kills": kernel_kills,
        "server_kept": kept,
    }


def main() -> None:
    if (os.cpu_count() or 1) < 3:
        sys.exit("memory_bomb: needs 3 CPUs (the client's, the server's, the bomb's)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "server.py").write_text(SERVER)
        (tmp / "bomb.py").write_text(BOMB)
        (tmp / "hog.py").write_text(HOG)
        setups = {
            "alone": ("alone (nxr, no bomb)", lambda r: under_nxr(tmp, r, guard=True, bomb=False)),
            "plain": ("plain", lambda r: plain(tmp, r)),
            "guard-off": ("nxr, guard off", lambda r: under_nxr(tmp, r, guard=False)),
            "nxr": ("nxr", lambda r: under_nxr(tmp, r, guard=True)),
            "nxr-early": (
                f"nxr, guard at available = {EARLY}",
                lambda r: under_nxr(tmp, r, guard=True, available=EARLY),
            ),
            "hog": ("nxr, a CPU hog for a bomb", lambda r: under_nxr(tmp, r, True, job="hog.py")),
        }
        chosen = os.environ.get("BOMB_SETUPS", "alone,plain,guard-off,nxr").split(",")
        results = {}
        for i in range(RUNS):
            for key in chosen:
                name, run = setups[key]
                name += f" #{i + 1}" if RUNS > 1 else ""
                rounds = tmp / f"rounds-{len(results)}"
                rounds.write_text("")
                results[name] = run(rounds)
                print(name, results[name], flush=True)
        print(f"\nSLO p99 {SLO * 1000:.0f} ms; {SECONDS} s per set-up")
        head = "| set-up | p50 | p99 | max | server's own p99 | client late p99 | failed | rounds"
        print(head + " | kernel OOM kills | server kept |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(
                f"| {name} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms "
                f"| {r['own_p99_ms']:.1f} ms | {r['late_p99_ms']:.1f} ms "
                f"| {r['failed']} of {r['requests']} | {r['rounds']} | {r['kernel_oom_kills']} "
                f"| {'yes' if r['server_kept'] else 'no'} |"
            )


if __name__ == "__main__":
    main()
