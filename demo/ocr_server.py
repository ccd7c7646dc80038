"""An OCR model served over HTTP, on ONNX Runtime (demo/ocr.py): PP-OCRv4's recognizer
(--task read, the default) or PP-OCR's direction classifier (--task orient).

    python -m demo.ocr_server [--port PORT] [--task read|orient] [--log FILE]

POST /ocr with a PNG of one line of text answers {"text": ..., "confidence": ...} (read)
or {"angle": 0 or 180, "confidence": ...} (orient). GET /metrics is the Prometheus text
of `ocr_request_duration_seconds`, a histogram of each request's latency as the server
sees it, as serving frameworks export theirs: an nxr profile may name it as the SLO's
latency source. The same latency is pushed to nxrd (nxrd.latency, for `slo.source.push`)
and, with --log, written as "ID SECONDS" (ID: the request's X-Request-Id).

A request's latency runs from when its client sent it, when the client says so in
X-Sent (CLOCK_MONOTONIC seconds, shared by every process on the host), so that time
queued in the listen backlog counts; else from when the server read it. Requests are
served one at a time: the model's CPU is its intra-op pool (OMP_NUM_THREADS, which nxr
sizes to the workload's CPUs).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from demo.ocr import Orienter, Recognizer, decode, render
from nxrd.latency import LatencyReporter

# 5 ms to 10 s: a recognition is tens of milliseconds alone, seconds under contention
BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
MAX_IMAGE = 4 << 20
TASKS: dict[str, Callable[[], Any]] = {"read": Recognizer, "orient": Orienter}


def answer_of(task: str, result: tuple[Any, float]) -> dict[str, Any]:
    value, confidence = result
    key = "text" if task == "read" else "angle"
    return {key: value.strip() if task == "read" else value, "confidence": round(confidence, 4)}


def make_handler(
    model: Any,
    task: str = "read",
    report: Callable[[float], None] | None = None,
    log: IO[str] | None = None,
) -> type[http.server.BaseHTTPRequestHandler]:
    registry = CollectorRegistry()
    duration = Histogram(
        "ocr_request_duration_seconds",
        "Time from a request's sending (X-Sent) or arrival to its answer",
        buckets=BUCKETS,
        registry=registry,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body are two writes: without TCP_NODELAY the body can wait for the
        # client's delayed ACK of the headers (40 ms on Linux)
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path != "/metrics":
                self._answer(404, b'{"error": "not found"}\n')
                return
            self._answer(200, generate_latest(registry), "text/plain; version=0.0.4")

        def do_POST(self) -> None:
            began = time.monotonic()
            with contextlib.suppress(ValueError):
                began = min(began, float(self.headers.get("X-Sent") or began))
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/ocr" or not 0 < length <= MAX_IMAGE:
                self._answer(400, b'{"error": "POST /ocr with a PNG body"}\n')
                return
            try:
                result = model.read(decode(self.rfile.read(length)))
            except OSError as e:  # not an image Pillow can read
                self._answer(400, json.dumps({"error": str(e)}).encode())
                return
            self._answer(200, json.dumps(answer_of(task, result)).encode() + b"\n")
            took = time.monotonic() - began
            duration.observe(took)
            if report is not None:
                report(took)
            if log is not None:
                log.write(f"{self.headers.get('X-Request-Id', '-')} {took:.6f}\n")

        def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class Server(http.server.HTTPServer):
    # Requests wait in the listen backlog while one is served: room for a burst's worth,
    # where the default (5) would drop connections and the client retry a second later.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up
            super().handle_error(request, client_address)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=int(os.environ.get("NXR_PORT", "8000")))
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--task", choices=sorted(TASKS), default="read")
    ap.add_argument("--log", type=Path, help="append each request's ID and latency here")
    args = ap.parse_args()
    model = TASKS[args.task]()
    model.read(decode(render("warm up")))  # the first run allocates; not a client's wait
    log = None
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        log = args.log.open("a", buffering=1)  # a line at a time: killed, it loses none
    handler = make_handler(model, args.task, LatencyReporter(), log)
    Server((args.address, args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
