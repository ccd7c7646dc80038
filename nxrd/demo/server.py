"""The latency-critical model server: UDP requests "ID SENT" (SENT in CLOCK_MONOTONIC
seconds, shared by every process on the host), one forward pass each, reply "ID". Each
request's latency, counted from SENT so that time queued in the socket counts too, is
pushed to nxrd (nxrd.latency).

    python -m nxrd.demo.server --port 7070 [--rows 8]
"""

from __future__ import annotations

import argparse
import socket
import time

from nxrd.latency import LatencyReporter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=7070)
    ap.add_argument("--rows", type=int, default=8, help="rows per request's batch")
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()

    from nxrd.demo.model import MLP  # numpy, and its BLAS thread pool, start here

    model = MLP(args.width)
    x = model.batch(args.rows)
    model(x)  # warm the pool before the first request
    report = LatencyReporter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", args.port))
    print(f"serving on udp 127.0.0.1:{args.port}", flush=True)
    while True:
        data, addr = sock.recvfrom(256)
        try:
            rid, sent = data.split()
            started = float(sent)
        except ValueError:
            continue
        model(x)
        sock.sendto(rid, addr)
        report(time.monotonic() - started)


if __name__ == "__main__":
    main()
