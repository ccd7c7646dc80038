"""The demo's real model: PP-OCRv4's recognizer from the rapidocr-onnxruntime wheel reads
the lines it is sent, over HTTP, and the server's latency histogram counts each request."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from demo.ocr import Recognizer, decode, render
from demo.ocr_server import make_handler

LINES = ["nxr supervises ML inference 2026", "GPU memory: 78 GiB free", "batch job 42 at 0.57"]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(intra_op=1)


@pytest.mark.parametrize("line", LINES)
def test_the_pretrained_recognizer_reads_a_rendered_line(recognizer: Recognizer, line: str) -> None:
    text, confidence = recognizer.read(decode(render(line)))
    assert text.strip() == line
    assert confidence > 0.9


@pytest.fixture
def server(recognizer: Recognizer) -> Iterator[int]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), make_handler(recognizer))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "image/png"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_the_server_answers_each_line_and_counts_it_in_its_histogram(server: int) -> None:
    for line in LINES[:2]:
        status, body = call(server, "POST", "/ocr", render(line))
        assert status == 200
        assert json.loads(body)["text"] == line
    status, metrics = call(server, "GET", "/metrics")
    assert status == 200
    assert b"ocr_request_duration_seconds_count 2.0" in metrics
    assert b'ocr_request_duration_seconds_bucket{le="+Inf"} 2.0' in metrics


def test_the_server_refuses_what_is_not_an_image_and_counts_nothing(server: int) -> None:
    status, body = call(server, "POST", "/ocr", b"not a png")
    assert status == 400 and b"error" in body
    status, _ = call(server, "GET", "/nothing")
    assert status == 404
    _, metrics = call(server, "GET", "/metrics")
    assert b"ocr_request_duration_seconds_count 0.0" in metrics
