"""Open-loop load: Poisson arrivals at a rate per phase, each request's latency counted from
the time it was due (not the time it was sent), so a late sender or a full queue shows up as
latency instead of hiding it. Writes one line per request: due time (seconds from the start)
and latency, or "lost" when no reply came within --timeout. Each request carries the time it
was actually sent, from which the server times it as a server would (demo.server).

    python -m demo.loadgen --port 7070 --phases 10:20,25:40 --out latency.csv
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import threading
import time
from pathlib import Path

from demo.figures import LOST, Phase, phases


def schedule(load: list[Phase], seed: int) -> list[float]:
    """Due times (seconds from the start) over the phases, each at its rate per second."""
    rng = random.Random(seed)
    due = []
    for ph in load:
        t = ph.start
        while True:
            t += rng.expovariate(ph.rate)
            if t >= ph.end:
                break
            due.append(t)
    return due


def read(path: Path) -> tuple[float, list[tuple[float, float]]]:
    """What main() writes: the load's start (CLOCK_MONOTONIC seconds) and each request's
    (due time from the start, latency), LOST for one never answered."""
    start, samples = 0.0, []
    for line in path.read_text().splitlines():
        if line.startswith("# start_monotonic"):
            start = float(line.split()[-1])
        elif line.strip():
            due, value = line.split()
            samples.append((float(due), LOST if value == "lost" else float(value)))
    return start, samples


def wait_for_server(sock: socket.socket, addr: tuple[str, int], timeout: float) -> None:
    end = time.monotonic() + timeout
    sock.settimeout(1.0)
    while time.monotonic() < end:
        sock.sendto(f"-1 {time.monotonic():.6f}".encode(), addr)
        try:
            while sock.recv(64) != b"-1":
                pass
            return
        except TimeoutError:
            continue
    raise SystemExit(f"loadgen: no reply from udp {addr[0]}:{addr[1]} in {timeout:.0f}s")


def service_time(sock: socket.socket, addr: tuple[str, int], n: int) -> float:
    """Median round trip of n requests sent one at a time (after a few to warm up): what
    one request costs the server when nothing queues."""
    sock.settimeout(10.0)
    times = []
    for _ in range(n + 10):
        sent = time.monotonic()
        sock.sendto(f"-2 {sent:.6f}".encode(), addr)
        while sock.recv(64) != b"-2":
            pass
        times.append(time.monotonic() - sent)
    return statistics.median(times[10:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=7070)
    ap.add_argument("--phases", default="10:20,25:40", help="RATE:SECONDS,... (rates per s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--wait", type=float, default=300.0, help="for the server's first reply")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    addr = ("127.0.0.1", args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    wait_for_server(sock, addr, args.wait)
    due = schedule(phases(args.phases), args.seed)
    done: list[float | None] = [None] * len(due)
    start = time.monotonic() + 0.5

    def receive() -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                rid = int(sock.recv(64))
            except (TimeoutError, ValueError):
                continue
            if 0 <= rid < len(due):
                done[rid] = time.monotonic() - (start + due[rid])

    stop = threading.Event()
    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    for i, t in enumerate(due):
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(f"{i} {time.monotonic():.6f}".encode(), addr)
    last = time.monotonic()
    while time.monotonic() - last < args.timeout and any(d is None for d in done[-50:]):
        time.sleep(0.1)
    stop.set()
    receiver.join()
    with open(args.out, "w") as f:
        f.write(f"# start_monotonic {start:.6f}\n")
        for t, d in zip(due, done, strict=True):
            f.write(f"{t:.4f} {'lost' if d is None else f'{d:.6f}'}\n")
    lost = sum(d is None for d in done)
    print(f"loadgen: {len(due)} requests, {lost} lost", flush=True)


if __name__ == "__main__":
    main()
