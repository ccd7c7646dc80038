"""Replicas on a real kernel: each on cores of its own, listening on its own port, living
and dying on its own."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from nxrd.model.units import parse_cpu_list
from tests.kernel.test_daemon import NXRCTL, PY, Nxrd, alive, pids_of

# Listens on NXR_PORT, as a model server would; readiness is a TCP connect to it.
SERVER = (
    "import os, socket, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('127.0.0.1', int(os.environ['NXR_PORT']))); s.listen(); time.sleep(600)"
)
PROFILE = f"""
[workloads.chat]
command = ["{PY}", "-c", "{SERVER}"]
class = "latency-critical"
cpus = 1
replicas = 2
port = 18500
ready = {{tcp = "127.0.0.1:18500", interval = "100ms"}}
restart = {{delay = "100ms"}}
"""


def test_replicas_run_on_disjoint_cores_each_on_its_own_port(
    tmp_path: Path, cgroup_root: Path
) -> None:
    d = Nxrd(tmp_path, PROFILE, cgroup_root).start()
    leaves = [cgroup_root / f"latency-critical/chat.{i}" for i in range(2)]
    try:
        d.wait_for(lambda: all(d.state_of(f"chat.{i}").get("state") == "ready" for i in range(2)))
        cores = [parse_cpu_list((leaf / "cpuset.cpus.effective").read_text()) for leaf in leaves]
        assert all(cores) and not cores[0] & cores[1], cores
        for i, leaf in enumerate(leaves):
            (pid,) = pids_of(leaf)
            status = Path(f"/proc/{pid}/status").read_text()
            assert f"Cpus_allowed_list:\t{(leaf / 'cpuset.cpus').read_text().strip()}\n" in status
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"NXR_PORT={18500 + i}".encode() in environ
            assert f"NXR_REPLICA={i}".encode() in environ
            listening = Path("/proc/net/tcp").read_text()
            assert f":{18500 + i:04X} 00000000:0000 0A" in listening  # LISTEN on its port

        # one replica killed: it alone restarts, the other keeps its process
        pids = [d.state_of(f"chat.{i}")["pid"] for i in range(2)]
        os.kill(int(pids[0]), signal.SIGKILL)  # type: ignore[call-overload]
        d.wait_for(
            lambda: (
                d.state_of("chat.0").get("pid") not in (None, pids[0])
                and d.state_of("chat.0").get("state") == "ready"
            )
        )
        assert d.state_of("chat.1")["pid"] == pids[1] and alive(int(pids[1]))  # type: ignore[call-overload]

        # the workload's name stands for both, and status lists them under it
        out = subprocess.run(
            [NXRCTL, "--socket", str(d.socket), "status"], capture_output=True, text=True
        ).stdout.splitlines()
        assert [line.split()[:3] for line in out[1:4]] == [
            ["chat", "latency-critical", "2/2"],
            ["chat.0", "latency-critical", "ready"],
            ["chat.1", "latency-critical", "ready"],
        ]
        r = subprocess.run(
            [NXRCTL, "--socket", str(d.socket), "stop", "chat"], capture_output=True, text=True
        )
        assert r.returncode == 0 and r.stdout.count("stopping") == 2, r.stdout + r.stderr
        d.wait_for(lambda: all(d.state_of(f"chat.{i}").get("state") == "stopped" for i in range(2)))
    finally:
        assert d.stop() == 0
    assert not any(leaf.exists() for leaf in leaves)
