"""A local attacker against a running nxrd, for the kernel tier's attack run.

Run as an unprivileged user with the system python3 (standard library only):

    python3 attacker.py ROLE SHARED_DIR STATE_DIR METRICS_PORT SECONDS SECRET

ROLE is "outsider" (no API group) or "member" (the API group). For SECONDS the outsider
floods the push socket and holds slow connections open on the API socket (200) and the
metrics port (50); both try every mutation, secret and malformed request they can; then it prints one JSON object
of counts: what got through, not what was tried.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

FLOODERS = 4
SLOW_CLIENTS = {"api": 200, "metrics": 50}  # the outsider's, held open at once
DRIP_EVERY = 0.5  # seconds between bytes of a slow client's request


def request(
    sock_path: str, method: str, target: str, body: bytes = b"", raw: bytes = b""
) -> tuple[int, bytes]:
    """(status, body) of one call; status 0 when the connection failed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        if not raw:
            head = f"{method} /v1/{target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            raw = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        return 0, b""
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), rest
    except (IndexError, ValueError):
        return 0, rest


def flood(path: str, until: float, counts: dict[str, int]) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    line = b"victim 0.000001\n" * 200
    sent = 0
    while time.monotonic() < until:
        try:
            s.sendto(line, path)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            time.sleep(0.01)
    counts[os.getpid()] = sent


def drip(family: int, address: object, count: int, until: float) -> None:
    """Keep count connections open, each sending its request a byte at a time."""
    request_bytes = b"GET /v1/host HTTP/1.1\r\nHost: x\r\n\r\n"
    conns: list[tuple[socket.socket, int]] = []
    while time.monotonic() < until:
        while len(conns) < count:
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.connect(address)
            except OSError:
                s.close()
                break
            conns.append((s, 0))
        kept = []
        for s, sent in conns:
            try:
                s.send(request_bytes[sent : sent + 1])
                kept.append((s, sent + 1))
            except OSError:  # nxrd closed it at its deadline: open another
                s.close()
        conns = kept
        time.sleep(DRIP_EVERY)
    for s, _ in conns:
        s.close()


ROOT_PROFILE = (
    '[workloads.pwn]\ncommand = ["sh", "-c", "id > /tmp/nxr-pwned; sleep 600"]\nuser = "root"\n'
)


def tries(role: str, shared: str, state: str, secret: str, until: float) -> dict[str, int]:
    api = os.path.join(shared, "nxrd.sock")
    apply_body = json.dumps({"files": [{"name": "pwn.toml", "text": ROOT_PROFILE}]}).encode()
    mutations = [
        *[("POST", f"workloads/victim/{verb}", b"") for verb in ("stop", "freeze", "restart")],
        ("POST", "apply", apply_body),
        ("POST", "apply?dry_run=1", apply_body),
        ("POST", "reload", b""),
        ("POST", "gpus/0/release", b""),
    ]
    if role == "member":  # the API group may steer what root declared, not change it
        mutations = [m for m in mutations if m[1].startswith(("apply", "reload"))]
    reads = [
        ("GET", "workloads/victim", b""),
        ("GET", "workloads/victim/logs?offset=0", b""),
        ("GET", "events?since=0", b""),
        ("GET", "workloads", b""),
        ("GET", "workloads/victim/explain", b""),
    ]
    if role == "member":  # the API group reads logs (what the workloads print) by design
        reads = [r for r in reads if "/logs" not in r[1]]
    malformed = [
        b"POST /v1/apply HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n",
        b"GET /v1/events?since=%C2%B2 HTTP/1.1\r\n\r\n",
        b"GET /v1/workloads/victim/logs?offset=--5 HTTP/1.1\r\n\r\n",
        b"GET /v1/events?since=" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n",
        b"POST /v1/apply HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"[" * 200000,
    ]
    files = [
        Path(state, "applied.json"),
        Path(state, "state.json"),
        Path(state, "logs", "victim.log"),
    ]
    got = {"tries": 0, "mutations": 0, "secrets": 0, "server_errors": 0, "files_read": 0}
    while time.monotonic() < until:
        for method, target, body in mutations:
            status, _ = request(api, method, target, body)
            got["tries"] += 1
            got["mutations"] += 200 <= status < 300
            got["server_errors"] += status >= 500
        for method, target, body in reads:
            status, answer = request(api, method, target, body)
            got["tries"] += 1
            got["secrets"] += secret.encode() in answer
            got["server_errors"] += status >= 500
        for raw in malformed:
            status, _ = request(api, "", "", raw=raw)
            got["tries"] += 1
            got["server_errors"] += status >= 500
        for f in files:
            try:
                text = f.read_bytes()
            except OSError:
                continue
            got["files_read"] += 1
            got["secrets"] += secret.encode() in text
        time.sleep(0.05)
    got["pwned"] = int(os.path.exists("/tmp/nxr-pwned"))
    return got


def main() -> None:
    role, shared, state, metrics_port, seconds, secret = sys.argv[1:7]
    until = time.monotonic() + float(seconds)
    with multiprocessing.Manager() as manager:
        counts = manager.dict()
        workers = [
            multiprocessing.Process(
                target=flood, args=(os.path.join(shared, "latency.sock"), until, counts)
            )
            for _ in range(FLOODERS if role == "outsider" else 0)
        ]
        if role == "outsider":
            api, metrics = os.path.join(shared, "nxrd.sock"), ("127.0.0.1", int(metrics_port))
            for family, address, count in (
                (socket.AF_UNIX, api, SLOW_CLIENTS["api"]),
                (socket.AF_INET, metrics, SLOW_CLIENTS["metrics"]),
            ):
                workers.append(
                    multiprocessing.Process(target=drip, args=(family, address, count, until))
                )
        for w in workers:
            w.start()
        got = tries(role, shared, state, secret, until)
        for w in workers:
            w.join(timeout=float(seconds) + 30)
        got["datagrams"] = sum(counts.values())
    print(json.dumps(got))


if __name__ == "__main__":
    main()
