"""The demo's real models: PP-OCRv4's recognizer and PP-OCR's direction classifier from the
rapidocr-onnxruntime wheel read the lines they are sent, over HTTP; the server's latency
histogram, its log and its reports to nxrd count each request from when its client sent it;
the demo's open-loop load drives it."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import loadgen
from demo.ocr import Orienter, Recognizer, decode, render
from demo.ocr_server import Server, make_handler

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


def upside_down(png: bytes) -> bytes:
    out = io.BytesIO()
    decode(png).rotate(180).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("line", LINES)
def test_the_direction_classifier_tells_upright_lines_from_upside_down_ones(line: str) -> None:
    orienter = Orienter(intra_op=1)
    assert orienter.read(decode(render(line)))[0] == 0
    angle, confidence = orienter.read(decode(upside_down(render(line))))
    assert angle == 180 and confidence > 0.9


@pytest.fixture
def orient_server(tmp_path: Path) -> Iterator[tuple[int, list[float], Path]]:
    """The server's orient task, as the demo runs it (its backlog, its log), with the
    latencies it would push to nxrd."""
    pushed: list[float] = []
    log_path = tmp_path / "server.latency"
    log = log_path.open("a", buffering=1)
    httpd = Server(("127.0.0.1", 0), make_handler(Orienter(1), "orient", pushed.append, log))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], pushed, log_path
    finally:
        httpd.shutdown()
        httpd.server_close()
        log.close()


def test_a_request_is_timed_from_when_its_client_sent_it_and_logged_by_its_id(
    orient_server: tuple[int, list[float], Path],
) -> None:
    port, pushed, log = orient_server
    png = upside_down(render(LINES[0]))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = time.monotonic() - 0.5  # as if it had waited half a second in the backlog
    conn.request("POST", "/ocr", png, {"X-Request-Id": "7", "X-Sent": f"{sent:.6f}"})
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["angle"] == 180
    conn.close()
    deadline = time.monotonic() + 10  # the server answers first, then times and logs
    while not (pushed and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pushed) == 1 and 0.5 <= pushed[0] < 5
    rid, took = log.read_text().split()
    assert rid == "7" and float(took) == pytest.approx(pushed[0], abs=1e-5)


def test_the_open_loop_load_sends_each_request_when_due_and_records_its_latency(
    orient_server: tuple[int, list[float], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _, log = orient_server
    out = tmp_path / "latency.csv"
    argv = ["--port", str(port), "--phases", "40:1,80:1", "--out", str(out), "--seed", "3"]
    monkeypatch.setattr("sys.argv", ["loadgen", *argv])
    loadgen.main()
    start, samples = loadgen.read(out)
    due = loadgen.schedule(loadgen.phases("40:1,80:1"), 3)
    assert [d for d, _ in samples] == pytest.approx(due, abs=1e-4)
    assert all(0 < latency < 5 for _, latency in samples)  # none lost
    ids = {line.split()[0] for line in log.read_text().splitlines()}
    assert {str(i) for i in range(len(due))} <= ids  # each request, by its number
    assert start < time.monotonic()
