"""The latency-critical model server: UDP requests "ID SENT" (SENT: when the client sent it,
in CLOCK_MONOTONIC seconds, shared by every process on the host), one forward pass each,
reply "ID". Each request's latency as a server sees it, from SENT to its reply (time queued
in the socket counts; the client's own delays, sending late or reading the reply late, do
not), is pushed to nxrd (nxrd.latency) and, with --log, written as "ID SECONDS".

    python -m demo.server --port 7070 [--rows 8] [--log FILE]
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from nxrd.latency import LatencyReporter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=7070)
    ap.add_argument("--rows", type=int, default=8, help="rows per request's batch")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--log", type=Path, help="append each request's ID and latency here")
    args = ap.parse_args()

    from demo.model import MLP  # numpy, and its BLAS thread pool, start here

    model = MLP(args.width)
    x = model.batch(args.rows)
    model(x)  # warm the pool before the first request
    report = LatencyReporter()
    log = None
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        log = args.log.open("a", buffering=1)  # a line at a time: killed, it loses none
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", args.port))
    print(f"serving on udp 127.0.0.1:{args.port}", flush=True)
    while True:
        data, addr = sock.recvfrom(256)
        try:
            rid, stamp = data.split()
            sent = float(stamp)
        except ValueError:
            continue
        model(x)
        sock.sendto(rid, addr)
        took = time.monotonic() - sent
        report(took)
        if log is not None:
            log.write(f"{rid.decode()} {took:.6f}\n")


if __name__ == "__main__":
    main()
