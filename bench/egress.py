"""Egress shaping in the test VM: a ceiling held, and a latency-critical request/response
client next to a batch upload that fills the link, without and with nxr.

    bash scripts/vm-run.sh '.venv/bin/python -u bench/egress.py'   # in the test VM, as root

The path: this host -> veth -> a router namespace whose way out is a 200Mbit link (`tbf`,
with the deep FIFO such links have) -> the peer namespace, running `iperf3 -s` and a TCP
echo server. Without nxr the upload's packets queue at that link ahead of the client's;
with nxr the host shapes its egress just under the link (`link = "190Mbit"`), so the queue
forms in nxr's HTB tree, where the latency-critical class goes first.

Printed: the shaped upload's rate against its ceiling (received by iperf3's server, over
ITERATIONS runs: median and range), alone and with an unshaped upload beside it, and per
set-up the client's round trips (64 bytes, every 10 ms): p50, p99 and the upload's rate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = sys.executable
ROUTER, PEER = "nxrb-router", "nxrb-peer"
HOST_DEV = "nxrb0"
THERE = "10.78.1.2"
LINK = "200mbit"
ECHO_PORT = 7007
DONE = ("exited", "stopped", "failed")  # the upload's iperf3 ended
ITERATIONS = int(os.environ.get("EGRESS_RUNS", "3"))
SECONDS = int(os.environ.get("EGRESS_SECONDS", "8"))

ECHO = textwrap.dedent(
    f"""
    import socket, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{THERE}", {ECHO_PORT})); s.listen()
    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (d := c.recv(64)):
            c.sendall(d)
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
)


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {done.stderr}")
    return done.stdout


def network() -> list[subprocess.Popen[bytes]]:
    """host --veth-- router --(200Mbit)-- peer; the peer's servers."""
    sh("ip", "netns", "add", ROUTER)
    sh("ip", "netns", "add", PEER)
    sh("ip", "link", "add", HOST_DEV, "type", "veth", "peer", "name", "r0", "netns", ROUTER)
    sh("ip", "-n", ROUTER, "link", "add", "r1", "type", "veth", "peer", "name", "p0", "netns", PEER)
    sh("ip", "addr", "add", "10.78.0.1/24", "dev", HOST_DEV)
    sh("ip", "link", "set", HOST_DEV, "up")
    sh("ip", "route", "add", "10.78.1.0/24", "via", "10.78.0.2")
    sh("ip", "-n", ROUTER, "addr", "add", "10.78.0.2/24", "dev", "r0")
    sh("ip", "-n", ROUTER, "addr", "add", "10.78.1.1/24", "dev", "r1")
    for dev in ("r0", "r1", "lo"):
        sh("ip", "-n", ROUTER, "link", "set", dev, "up")
    sh("ip", "netns", "exec", ROUTER, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # the slower link, with the deep FIFO of a real one (100 ms of it)
    sh("ip", "netns", "exec", ROUTER, "tc", "qdisc", "add", "dev", "r1", "root", "tbf",
       "rate", LINK, "burst", "64kb", "latency", "100ms")  # fmt: skip
    sh("ip", "-n", PEER, "addr", "add", f"{THERE}/24", "dev", "p0")
    sh("ip", "-n", PEER, "link", "set", "p0", "up")
    sh("ip", "-n", PEER, "link", "set", "lo", "up")
    sh("ip", "-n", PEER, "route", "add", "10.78.0.0/24", "via", "10.78.1.1")
    servers = [
        subprocess.Popen(
            ["ip", "netns", "exec", PEER, "iperf3", "-s", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ("5301", "5302")
    ]
    servers.append(subprocess.Popen(["ip", "netns", "exec", PEER, PY, "-c", ECHO]))
    time.sleep(2)
    return servers


def teardown(servers: list[subprocess.Popen[bytes]]) -> None:
    for s in servers:
        s.terminate()
        s.wait(timeout=10)
    subprocess.run(["ip", "link", "del", HOST_DEV], capture_output=True)
    for ns in (ROUTER, PEER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def round_trips(seconds: float) -> list[float]:
    """64-byte round trips to the echo server, one every 10 ms."""
    out = []
    with socket.create_connection((THERE, ECHO_PORT), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.monotonic()
            s.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(s.recv(64 - got))
            out.append(time.monotonic() - began)
            time.sleep(0.01)
    return out


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def upload_rate(out: str) -> float:
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


class Nxrd:
    def __init__(self, tmp: Path, text: str) -> None:
        self.root = Path(f"/sys/fs/cgroup/nxr-egress-{uuid.uuid4().hex[:6]}")
        (tmp / "p.toml").write_text(text)
        self.socket = tmp / "nxrd.sock"
        argv = [str(BIN / "nxrd"), "--profile", str(tmp / "p.toml"), "--state-dir"]
        argv += [str(tmp / "state"), "--socket", str(self.socket), "--cgroup-root", str(self.root)]
        self.log = tmp / "nxrd.log"
        self.proc = subprocess.Popen(argv, stderr=self.log.open("wb"), umask=0o077)

    def status(self) -> dict[str, dict[str, object]]:
        out = subprocess.run(
            [str(BIN / "nxrctl"), "--socket", str(self.socket), "status", "-o", "json"],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return {}
        return {w["name"]: w for w in json.loads(out.stdout)["workloads"]}

    def wait(self, name: str, *states: str) -> None:
        for _ in range(600):
            if self.status().get(name, {}).get("state") in states:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"nxrd exited:\n{self.log.read_text()}")
            time.sleep(0.2)
        raise SystemExit(f"{name} never {states}:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        subprocess.run(["find", str(self.root), "-depth", "-type", "d", "-delete"], check=False)


def profile(upload: str, ceiling: str | None) -> str:
    net = f'net = {{ egress = "{ceiling}" }}' if ceiling else ""
    return f"""
[host.net]
interfaces = ["{HOST_DEV}"]
link = "190Mbit"

[workloads.upload]
command = {json.dumps(["sh", "-c", upload])}
class = "batch"
restart = {{policy = "no"}}
{net}

[workloads.chat]
command = ["sleep", "100000"]
class = "latency-critical"
exclusive = false
net = {{ guarantee = "20Mbit" }}
"""


def ceiling_runs(tmp: Path) -> None:
    """The shaped upload alone, then with an unshaped one from here at the same time."""
    for beside in (False, True):
        rates, others = [], []
        for i in range(ITERATIONS):
            out = tmp / f"ceiling-{i}.json"
            cmd = f"iperf3 -c {THERE} -p 5301 -t {SECONDS} -J > {out}"
            d = Nxrd(tmp, profile(cmd, "100Mbit"))
            try:
                d.wait("upload", "ready", *DONE)
                if beside:
                    other = sh("iperf3", "-c", THERE, "-p", "5302", "-t", str(SECONDS - 2), "-J")
                    others.append(upload_rate(other) / 1e6)
                d.wait("upload", *DONE)
            finally:
                d.stop()
            rates.append(upload_rate(out.read_text()) / 1e6)
            if os.environ.get("EGRESS_DEBUG"):
                intervals = json.loads(out.read_text())["intervals"]
                print(
                    f"  run {i}: {rates[-1]:.1f} Mbit/s; per second:",
                    [round(x["sum"]["bits_per_second"] / 1e6) for x in intervals],
                )
                for line in d.log.read_text().splitlines():
                    if "egress" in line or "warning" in line:
                        print(f"    nxrd: {line}")
        line = (
            f"ceiling 100Mbit{', beside an unshaped upload' if beside else ', alone'}: received"
            f" median {statistics.median(rates):.1f} Mbit/s (range {min(rates):.1f}-"
            f"{max(rates):.1f}, {ITERATIONS} runs of {SECONDS} s)"
        )
        if beside:
            line += (
                f"; the unshaped upload, for {SECONDS - 2} s: median"
                f" {statistics.median(others):.1f} Mbit/s (range {min(others):.1f}-"
                f"{max(others):.1f}) of the 190Mbit nxr divides"
            )
        print(line)


def latency_runs(tmp: Path) -> None:
    for label in ("plain processes", "with nxr"):
        out = tmp / "upload.json"
        cmd = f"iperf3 -c {THERE} -p 5302 -t {SECONDS + 4} -J > {out}"
        d = None
        if label == "with nxr":
            d = Nxrd(tmp, profile(cmd, None))
            d.wait("chat", "ready")
            client = chat_leaf(d)
            proc = None
        else:
            proc = subprocess.Popen(["sh", "-c", cmd])
            client = None
        time.sleep(2)  # the upload fills the link
        rtts = measured(client)
        if proc is not None:
            proc.wait(timeout=120)
        if d is not None:
            d.wait("upload", *DONE)
            d.stop()
        rate = upload_rate(out.read_text()) / 1e6
        print(
            f"{label}: round trip p50 {pct(rtts, 0.5) * 1000:.1f} ms,"
            f" p99 {pct(rtts, 0.99) * 1000:.1f} ms ({len(rtts)} of them);"
            f" the upload {rate:.0f} Mbit/s"
        )


def chat_leaf(d: Nxrd) -> Path:
    return d.root / "latency-critical/chat"


def measured(leaf: Path | None) -> list[float]:
    """Round trips from a process in leaf (the latency-critical workload's), or here."""
    if leaf is None:
        return round_trips(SECONDS)
    code = (
        f"import sys, json; sys.path.insert(0, {str(REPO / 'bench')!r});"
        f" from egress import round_trips; print(json.dumps(round_trips({SECONDS})))"
    )
    argv = [PY, "-c", code]
    from nxrd.kernel.spawn import spawn_in_cgroup

    p = spawn_in_cgroup(argv, leaf, stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=120)
    return list(json.loads(out))


def main() -> None:
    if shutil.which("iperf3") is None or shutil.which("nft") is None:
        raise SystemExit("bench/egress.py needs iperf3 and nftables (bash scripts/setup.sh)")
    tmp = Path(tempfile.mkdtemp(prefix="nxr-egress-"))
    servers = network()
    try:
        ceiling_runs(tmp)
        latency_runs(tmp)
    finally:
        teardown(servers)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
