"""An OCR model served over HTTP: PP-OCRv4's recognizer (demo/ocr.py) on ONNX Runtime.

    python -m demo.ocr_server [--port PORT]     # default $NXR_PORT, else 8000

POST /ocr with a PNG of one line of text answers {"text": ..., "confidence": ...}. GET
/metrics is the Prometheus text of `ocr_request_duration_seconds`, a histogram of each
request's time in the server (reading the image, recognizing, answering), as serving
frameworks export theirs: an nxr profile names it as the SLO's latency source. Requests are
served one at a time: the model's CPU is its intra-op pool (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from demo.ocr import Recognizer, decode

# 5 ms to 10 s: a recognition is tens of milliseconds alone, seconds under contention
BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
MAX_IMAGE = 4 << 20


def make_handler(recognizer: Recognizer) -> type[http.server.BaseHTTPRequestHandler]:
    registry = CollectorRegistry()
    duration = Histogram(
        "ocr_request_duration_seconds",
        "Time from a request's arrival to its answer",
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
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/ocr" or not 0 < length <= MAX_IMAGE:
                self._answer(400, b'{"error": "POST /ocr with a PNG body"}\n')
                return
            try:
                text, confidence = recognizer.read(decode(self.rfile.read(length)))
            except OSError as e:  # not an image Pillow can read
                self._answer(400, json.dumps({"error": str(e)}).encode())
                return
            body = json.dumps({"text": text.strip(), "confidence": round(confidence, 4)})
            self._answer(200, body.encode() + b"\n")
            duration.observe(time.monotonic() - began)

        def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=int(os.environ.get("NXR_PORT", "8000")))
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    server = http.server.HTTPServer((args.address, args.port), make_handler(Recognizer()))
    server.serve_forever()


if __name__ == "__main__":
    main()
