"""Readiness probes against real local listeners."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from nxrd.kernel.probes import check
from nxrd.profile.model import Ready


@pytest.fixture
def http_port() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp(http_port: int) -> None:
    assert check(Ready(tcp=f"127.0.0.1:{http_port}"))
    assert not check(Ready(tcp=f"127.0.0.1:{free_port()}"))


def test_http_needs_a_2xx(http_port: int) -> None:
    assert check(Ready(http=f"http://127.0.0.1:{http_port}/health"))
    assert not check(Ready(http=f"http://127.0.0.1:{http_port}/starting"))  # 503
    assert not check(Ready(http=f"http://127.0.0.1:{free_port()}/health"))


def test_exec_needs_exit_0() -> None:
    assert check(Ready(exec=["true"]))
    assert not check(Ready(exec=["false"]))
    assert not check(Ready(exec=["/no/such/program"]))
    assert not check(Ready(exec=["sleep", "5"], interval=0.2))  # too slow: not ready
