"""Open-loop load over HTTP: Poisson arrivals at a rate per phase, each request's latency
counted from the time it was due (not the time it was sent), so a late sender or a full
queue shows up as latency instead of hiding it. Each request is a POST /ocr of a line of
text as a PNG (demo.ocr_server) on a connection of its own, and carries its number
(X-Request-Id) and the time it was actually sent (X-Sent), from which the server times it
as a server would. Writes one line per request: due time (seconds from the start) and
latency, or "lost" when no answer (200) came within --timeout.

    python -m demo.loadgen --port 7070 --phases 10:20,25:40 --out latency.csv
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import random
import resource
import statistics
import time
from pathlib import Path

from demo.figures import LOST, Phase, phases
from demo.ocr import decode, render

LINES = ("nxr supervises ML inference 2026", "GPU memory: 78 GiB free", "batch job 42 at 0.57")


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


def bodies() -> list[bytes]:
    """What clients send: the lines as PNGs, each also upside down (for the classifier)."""
    out = []
    for line in LINES:
        png = render(line)
        flipped = io.BytesIO()
        decode(png).rotate(180).save(flipped, format="PNG")
        out += [png, flipped.getvalue()]
    return out


def post(port: int, body: bytes, rid: int, timeout: float = 10.0) -> int:
    """One request, as the load sends it; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/ocr", body, headers=_headers(rid, len(body)))
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def _headers(rid: int, length: int) -> dict[str, str]:
    return {
        "Content-Type": "image/png",
        "Content-Length": str(length),
        "X-Request-Id": str(rid),
        "X-Sent": f"{time.monotonic():.6f}",
        "Connection": "close",
    }


def wait_for_server(port: int, timeout: float) -> None:
    body = render(LINES[0])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if post(port, body, -1) == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"loadgen: no answer from http://127.0.0.1:{port}/ocr in {timeout:.0f}s")


def service_time(port: int, n: int) -> float:
    """Median round trip of n requests sent one at a time (after a few to warm up): what
    one request costs the server when nothing queues."""
    body = render(LINES[0])
    times = []
    for i in range(n + 5):
        sent = time.monotonic()
        if post(port, body, -2 - i) != 200:
            raise OSError("the server refused a request")
        times.append(time.monotonic() - sent)
    return statistics.median(times[5:])


async def _request(port: int, body: bytes, rid: int, timeout: float) -> bool:
    """One request on a connection of its own: whether it was answered 200 in time."""

    async def exchange() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in _headers(rid, len(body)).items())
            writer.write(f"POST /ocr HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body)
            await writer.drain()
            status = await reader.readline()
            await reader.read()  # the rest, to the server's close
            return status.split()[1:2] == [b"200"]
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError, IndexError):
        return False


async def run(port: int, due: list[float], timeout: float) -> tuple[float, list[float | None]]:
    """Sends each request when due, never waiting for answers; (start, latencies)."""
    sent = bodies()
    done: list[float | None] = [None] * len(due)
    start = time.monotonic() + 0.5

    async def one(i: int) -> None:
        if await _request(port, sent[i % len(sent)], i, timeout):
            done[i] = time.monotonic() - (start + due[i])

    tasks = []
    for i, t in enumerate(due):
        delay = start + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return start, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=7070)
    ap.add_argument("--phases", default="10:20,25:40", help="RATE:SECONDS,... (rates per s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--wait", type=float, default=300.0, help="for the server's first answer")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    # a connection per request in flight: a queue that builds needs more than 1024 files
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    wait_for_server(args.port, args.wait)
    due = schedule(phases(args.phases), args.seed)
    start, done = asyncio.run(run(args.port, due, args.timeout))
    with open(args.out, "w") as f:
        f.write(f"# start_monotonic {start:.6f}\n")
        for t, d in zip(due, done, strict=True):
            f.write(f"{t:.4f} {'lost' if d is None else f'{d:.6f}'}\n")
    lost = sum(d is None for d in done)
    print(f"loadgen: {len(due)} requests, {lost} lost", flush=True)


if __name__ == "__main__":
    main()
