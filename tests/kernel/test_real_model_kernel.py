"""The demo's real model under nxr on a real kernel (issue 33): PP-OCR on ONNX Runtime,
served over HTTP from its own leaf, every thread of it on the workload's core with its
intra-op pool sized to it, answering real inferences while nxrd reads its own latency
histogram."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from demo import loadgen
from nxrd.kernel.discovery import discover
from nxrd.model.units import parse_cpu_list
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from tests.kernel.test_daemon import PY, ROOT, Nxrd, pids_of

NXRCTL = str(Path(sys.executable).parent / "nxrctl")
PORT = 18433


def profile() -> str:
    # cpus = 1 on the VM's two CPUs: the server's core is exclusive, the batch job has the
    # other one
    return f"""
[controller]
share = false  # the batch job keeps off the server's core even while it idles

[workloads.chat]
command = ["{PY}", "-m", "demo.ocr_server", "--task", "orient", "--port", "{PORT}"]
cwd = "{ROOT}"
class = "latency-critical"
cpus = 1
memory_max = "512M"
ready = {{tcp = "127.0.0.1:{PORT}"}}

[workloads.chat.slo]
p99 = "30s"
window = "3s"
source = {{prometheus = {{url = "http://127.0.0.1:{PORT}/metrics", metric = "ocr_request_duration_seconds", interval = "500ms"}}}}

[workloads.embed]
command = ["{PY}", "-m", "demo.vad_batch", "--progress", "/dev/null"]
cwd = "{ROOT}"
class = "batch"
memory_max = "512M"
"""


def test_the_real_model_serves_from_its_leaf_with_every_thread_on_its_core(
    tmp_path: Path, cgroup_root: Path
) -> None:
    text = profile()
    d = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "latency-critical/chat"
    planned = make_plan(parse_profile(text), discover(gpus=False)).workload("chat")
    core = parse_cpu_list(planned.cpus)
    try:
        d.wait_for(lambda: leaf.exists() and pids_of(leaf), timeout=120)
        loadgen.wait_for_server(PORT, 300)  # ONNX Runtime's start, emulated
        (pid,) = pids_of(leaf)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"OMP_NUM_THREADS=1" in environ  # the intra-op pool sized to its one core

        # real inferences: each line upright and upside down, told apart by the model
        angles = []
        for i, body in enumerate(loadgen.bodies()[:4]):
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
            conn.request("POST", "/ocr", body, {"X-Request-Id": str(i)})
            answer = conn.getresponse()
            assert answer.status == 200
            angles.append(json.loads(answer.read())["angle"])
            conn.close()
        assert angles == [0, 180, 0, 180]

        # every thread ONNX Runtime and Python started is allowed onto the core only, and
        # the ones that ran, ran there (/proc's "processor": the CPU each last ran on)
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        for task in tasks:
            status = (task / "status").read_text()
            assert f"Cpus_allowed_list:\t{planned.cpus}\n" in status, task.name
            last_cpu = int((task / "stat").read_text().rsplit(")", 1)[1].split()[36])
            assert last_cpu in core, task.name
        # the batch job runs beside it, off its core
        embed = cgroup_root / "batch/embed"
        assert not parse_cpu_list((embed / "cpuset.cpus.effective").read_text()) & core

        # nxrd reads the server's own histogram: the latency it observed is the model's
        def observed() -> float | None:
            out = subprocess.run(
                [NXRCTL, "--socket", str(d.socket), "show", "chat", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            return json.loads(out).get("latency_seconds") if out else None

        # requests one after another, so that the 3 s window always holds some
        stop = threading.Event()

        def client() -> None:
            for i in range(1000):
                if stop.is_set():
                    return
                loadgen.post(PORT, loadgen.bodies()[i % 6], 100 + i, timeout=120)

        sender = threading.Thread(target=client, daemon=True)
        sender.start()
        try:
            deadline = time.monotonic() + 120
            latency = observed()
            while latency is None and time.monotonic() < deadline:
                time.sleep(1)
                latency = observed()
        finally:
            stop.set()
            sender.join(timeout=120)
        # what nxrd saw is the model's time in the server (about 0.14 s in the VM)
        assert latency is not None and 0 < latency < 30, d.log.read_text()
    finally:
        assert d.stop() == 0
    assert not leaf.exists()
