"""The controller on a real kernel: pushed latencies over the SLO squeeze the batch class,
recovery gives it back (and then chat's idle CPU too, until the next slow window), and only the workload's own processes can report its latency."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from nxrd.latency import LatencyReporter
from tests.kernel.test_daemon import PY, Nxrd

NXRCTL = str(Path(sys.executable).parent / "nxrctl")

# chat reports 0.5 s per "request" until the file `fast` exists, then 0.01 s.
PUSHER = (
    "import os, time; from nxrd.latency import LatencyReporter; r = LatencyReporter(); "
    "d = os.environ['FLAG_DIR']\n"
    "while True:\n"
    "    r(0.01 if os.path.exists(d + '/fast') else 0.5); time.sleep(0.05)"
)


def profile(tmp: Path, chat: str) -> str:
    return f"""
[controller]
period = "200ms"
cooldown = "500ms"
relax_after = "1s"

[workloads.chat]
command = {chat}
class = "latency-critical"
cpus = 1
env = {{FLAG_DIR = "{tmp}"}}
slo = {{p99 = "200ms", window = "1s", source = {{push = true}}}}

[workloads.embed]
command = ["sleep", "600"]
class = "batch"
"""


def test_pushed_violations_squeeze_batch_and_recovery_restores_it(
    tmp_path: Path, cgroup_root: Path
) -> None:
    pusher = json.dumps([PY, "-c", PUSHER])  # a JSON list is a valid TOML array
    d = Nxrd(tmp_path, profile(tmp_path, pusher), cgroup_root).start()
    embed = cgroup_root / "batch/embed"

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NXRCTL, "--socket", str(d.socket), *args], capture_output=True, text=True, timeout=60
        )

    try:
        d.wait_for(lambda: embed.exists() and (embed / "cpu.max").read_text().startswith("max"))
        static_weight = (embed / "cpu.weight").read_text().strip()
        static_cpus = (embed / "cpuset.cpus").read_text().strip()
        # the violations push the ladder up to caps on the batch workload
        d.wait_for(lambda: not (embed / "cpu.max").read_text().startswith("max"))
        # chat has CPU 1 to itself: cutting embed's weight could not help it, so no rung does
        assert (embed / "cpu.weight").read_text().strip() == static_weight
        events = json.loads(
            ctl("events", "--workload", "controller", "-o", "json").stdout.splitlines()[0]
        )
        assert events["new"] == "cap-75%" and events["data"]["slo"] == {"chat": 0.2}
        assert events["data"]["observed"]["chat"] == 0.5
        signals = events["data"]["signals"]  # read each tick from kept-open files
        assert set(signals) == {"chat", "embed"}
        assert set(signals["chat"]) >= {
            *("cpu_some", "memory_some", "memory_full", "io_some", "io_full"),
            *("memory_current", "memory_high_events", "memory_oom_kill_events"),
        }
        assert signals["chat"]["memory_current"] > 0
        x = json.loads(ctl("explain", "embed", "-o", "json").stdout)
        cap = next(r for r in x["resources"] if r["resource"] == "cpu.max")
        assert cap["by"].startswith("controller: cap-") and cap["kernel"] == cap["written"]
        status = json.loads(ctl("show", "chat", "-o", "json").stdout)
        assert status["latency_seconds"] == 0.5 and status["slo_seconds"] == 0.2

        (tmp_path / "fast").touch()  # latency recovers: everything back to static
        d.wait_for(
            lambda: (
                (embed / "cpu.max").read_text().startswith("max")
                and (embed / "cpu.weight").read_text().strip() == static_weight
            ),
            timeout=120,
        )
        assert "static" in [e[1] for e in d.events("controller")]
        # still comfortable: batch may run on chat's CPU too, then loses it at the first
        # slow window
        chat_cpus = (cgroup_root / "latency-critical/chat/cpuset.cpus").read_text().strip()
        # the event is logged as the decision is taken, just before the cpusets are written
        d.wait_for(
            lambda: (
                d.events("controller")[-1][1] == "share"
                and (embed / "cpuset.cpus").read_text().strip() == "0-1"
            ),
            timeout=60,
        )
        assert (embed / "cpuset.cpus.effective").read_text().strip() == "0-1"
        assert chat_cpus in ("0", "1")
        (tmp_path / "fast").unlink()
        d.wait_for(lambda: (embed / "cpuset.cpus").read_text().strip() == static_cpus)
        assert chat_cpus not in (embed / "cpuset.cpus").read_text()
    finally:
        assert d.stop() == 0


def test_a_process_outside_the_workload_cannot_report_its_latency(
    tmp_path: Path, cgroup_root: Path
) -> None:
    d = Nxrd(tmp_path, profile(tmp_path, '["sleep", "600"]'), cgroup_root).start()
    embed = cgroup_root / "batch/embed"
    try:
        d.wait_for(lambda: embed.exists() and (tmp_path / "latency.sock").exists())
        liar = LatencyReporter("chat", str(tmp_path / "latency.sock"))
        for _ in range(60):  # 3 s of 5 s latencies, from the test process
            liar(5.0)
            time.sleep(0.05)
        assert (embed / "cpu.max").read_text().startswith("max")
        assert [e for e in d.events("controller") if e[1] != "-"] == []
    finally:
        assert d.stop() == 0


# chat answers every request after 0.4 s: a probe sees it miss a 200 ms SLO.
SLOW_SERVER = (
    "import http.server, time\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        time.sleep(0.4); self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', 18431), H).serve_forever()"
)


def test_a_probe_measured_by_nxrd_squeezes_batch(tmp_path: Path, cgroup_root: Path) -> None:
    server = json.dumps([PY, "-c", SLOW_SERVER])
    text = profile(tmp_path, server).replace(
        "source = {push = true}",
        'source = {probe = {url = "http://127.0.0.1:18431/", interval = "200ms"}}',
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    embed = cgroup_root / "batch/embed"
    try:
        d.wait_for(lambda: embed.exists() and (embed / "cpu.max").read_text().startswith("max"))
        d.wait_for(lambda: not (embed / "cpu.max").read_text().startswith("max"))
        up = next(e for e in d.events("controller") if e[1] == "cap-75%")
        assert "chat slack" in up[2]
    finally:
        assert d.stop() == 0
