"""A served model for the request benchmarks: HTTP on $NXR_PORT, one request at a time,
each a fixed amount of CPU work (--work iterations of SHA-256), so that its capacity is
one over its service time. /health answers at once.

    NXR_PORT=18000 python bench/httpmodel.py --work 20000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(port: int, work: int) -> None:
    busy = threading.Lock()  # one request on the CPU at a time: a model with one stream

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The answer in one write, as real servers send it: unbuffered, the headers and the
        # body went out as two segments, and Nagle held the second until the first was
        # acknowledged (up to a delayed ACK's 40 ms, a third of a request here)
        wbufsize = 65536

        def do_GET(self) -> None:
            if self.path != "/health":
                with busy:
                    digest = b"x"
                    for _ in range(work):
                        digest = hashlib.sha256(digest).digest()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up (a refused or timed-out request) is no news

    server = Server(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=int, default=20000)
    serve(int(os.environ["NXR_PORT"]), ap.parse_args().work)
