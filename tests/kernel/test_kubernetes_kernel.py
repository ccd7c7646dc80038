"""nxrd kubernetes on a real kernel: pods laid out as the kubelet lays them out (its cgroup
names for both drivers, made as plain directories: the VM runs no systemd), each container
a real one that runc starts in its cgroup (own PID, mount, IPC and UTS namespaces, a root
filesystem made of the VM's own /usr and /etc; the host's network, as a hostNetwork pod),
and the pod list served over HTTP on loopback as the kubelet's /pods. Latency over the
SLO freezes and caps the lower pods; recovery and the agent's stop give the kubelet's
values back; the latency-critical pod's cpuset is never written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nxrd.agent.pods import Driver, Pod
from tests.kernel.kubelet_node import FIXTURE, PYTHON, Runc, lay_out, serving

NXRD = str(Path(sys.executable).parent / "nxrd")
NXRCTL = str(Path(sys.executable).parent / "nxrctl")

# The chat pod's server: a request_latency_seconds histogram on :18080 (the fixture's SLO
# source), 50 requests more at each scrape, slow (0.5 s each) until the file `fast` exists.
METRICS = """
import http.server, os, sys
flag, n = sys.argv[1], [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n[0] += 50
        fast = n[0] if os.path.exists(flag) else 0
        body = ("# TYPE request_latency_seconds histogram\\n"
                f'request_latency_seconds_bucket{{le="0.1"}} {fast}\\n'
                f'request_latency_seconds_bucket{{le="1.0"}} {n[0]}\\n'
                f'request_latency_seconds_bucket{{le="+Inf"}} {n[0]}\\n'
                f"request_latency_seconds_count {n[0]}\\n"
                f"request_latency_seconds_sum {n[0] * 0.3}\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 18080), H).serve_forever()
"""
SPIN = "while True: pass"


@pytest.fixture
def kubelet_pods() -> Iterator[str]:
    with serving(FIXTURE.read_bytes()) as url:
        yield url


def kubelet_tree(root: Path, driver: Driver, tmp: Path, runc: Runc) -> dict[str, Path]:
    """The fixture's pods: the chat server in the Guaranteed one, on the CPU manager's CPU
    1; a spinning process in each other, on the shared CPU 0."""

    def argv(pod: Pod) -> list[str]:
        if pod.nxr_class == "latency-critical":
            return [PYTHON, "-c", METRICS, str(tmp / "fast")]
        return [PYTHON, "-c", SPIN]

    cpusets = {"Guaranteed": "1", "Burstable": "0", "BestEffort": "0"}
    return lay_out(root, driver, runc, cpusets, argv)


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def usage(pod: Path) -> int:
    for line in (pod / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec"):
            return int(line.split()[1])
    raise AssertionError("no usage_usec")


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_the_agent_freezes_and_caps_lower_pods_while_the_slo_is_missed(
    tmp_path: Path, scratch: Path, kubelet_pods: str, driver: Driver
) -> None:
    runc = Runc(tmp_path / "containers")
    try:
        paths = kubelet_tree(scratch, driver, tmp_path, runc)
        run_agent(tmp_path, scratch, kubelet_pods, driver, paths)
    finally:
        runc.remove()


def run_agent(
    tmp_path: Path, scratch: Path, kubelet_pods: str, driver: Driver, paths: dict[str, Path]
) -> None:
    chat, embed, indexer = (
        paths[f"models/{n}-7d9f8c6b5-x2x4q"] for n in ("chat", "embed", "indexer")
    )
    coredns = paths["kube-system/coredns-7d9f8c6b5-x2x4q"]
    kubelet = {
        p: {f: (p / f).read_text() for f in ("cpu.max", "cpu.weight")} for p in paths.values()
    }
    controller = tmp_path / "controller.toml"
    controller.write_text(
        '[controller]\nperiod = "200ms"\ncooldown = "500ms"\nrelax_after = "1s"\n'
    )
    log = (tmp_path / "agent.log").open("w")
    argv = [NXRD, "kubernetes", "--pods-url", kubelet_pods, "--cgroup-driver", driver]
    argv += ["--cgroup-mount", str(scratch), "--node", "node-1", "--controller", str(controller)]
    argv += ["--socket", str(tmp_path / "agent.sock")]
    agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("the lower pods frozen", lambda: all(
            "frozen 1" in (p / "cgroup.events").read_text() for p in (embed, indexer)))  # fmt: skip
        assert (embed / "cpu.max").read_text().strip() == "25000 100000"  # a quarter of CPU 0
        assert (indexer / "cpu.max").read_text().strip() == "10000 100000"  # its floor
        frozen_at = usage(embed)
        time.sleep(1.0)
        assert usage(embed) == frozen_at  # the kernel froze its spinning process
        status = subprocess.run(
            [NXRCTL, "--socket", str(tmp_path / "agent.sock"), "status"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        embed_row = [ln for ln in status.stdout.splitlines() if "models/embed-" in ln]
        assert embed_row and "frozen" in embed_row[0], status.stdout
        assert (chat / "cpuset.cpus").read_text().strip() == "1"  # the CPU manager's
        assert (coredns / "cgroup.freeze").read_text().strip() == "0"  # not nxr's
        assert {f: (coredns / f).read_text() for f in ("cpu.max", "cpu.weight")} == kubelet[coredns]
        (tmp_path / "fast").write_text("")
        wait_for("the lower pods thawed and given back the kubelet's values", lambda: all(
            (p / "cgroup.freeze").read_text().strip() == "0"
            and (p / "cpu.max").read_text() == kubelet[p]["cpu.max"]
            for p in (embed, indexer)))  # fmt: skip
        wait_for("the batch pod running again", lambda: usage(embed) > frozen_at)
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=60)
        log.close()
    said = (tmp_path / "agent.log").read_text()
    assert rc == 0, said
    assert "freeze-batch" in said and "models/chat-7d9f8c6b5-x2x4q slack" in said
    for p in paths.values():
        assert {f: (p / f).read_text() for f in ("cpu.max", "cpu.weight")} == kubelet[p], said
