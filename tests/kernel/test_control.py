"""nxrd steered only through nxrctl and curl, on a real kernel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.kernel.test_daemon import Nxrd, pids_of

NXRCTL = str(Path(sys.executable).parent / "nxrctl")


def test_status_stop_start_restart_events(tmp_path: Path, cgroup_root: Path) -> None:
    text = (
        '[workloads.w1]\ncommand = ["sleep", "600"]\nmemory_max = "64M"\n'
        '[workloads.w2]\ncommand = ["sleep", "600"]\nclass = "batch"\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NXRCTL, "--socket", str(d.socket), *args], capture_output=True, text=True, timeout=60
        )

    def state(name: str) -> dict[str, object]:
        r = ctl("show", name, "-o", "json")
        return json.loads(r.stdout) if r.stdout else {}

    leaf = cgroup_root / "interactive/w1"
    try:
        d.wait_for(
            lambda: (
                d.socket.exists()
                and state("w1").get("state") == "ready"
                and state("w2").get("state") == "ready"
            )
        )
        status = json.loads(ctl("status", "-o", "json").stdout)["workloads"]
        w1 = next(w for w in status if w["name"] == "w1")
        assert pids_of(leaf) == [w1["pid"]]
        assert w1["memory_max"] == 64 << 20 and w1["memory_current"] > 0
        assert "w2" in ctl("status").stdout

        curl = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(d.socket), "http://localhost/v1/workloads/w2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(curl.stdout)["cgroup"] == "batch/w2"

        assert ctl("stop", "w1").returncode == 0
        d.wait_for(lambda: state("w1").get("state") == "stopped")
        assert not leaf.exists()
        assert ctl("show", "w1").returncode == 3  # not running

        assert ctl("start", "w1").returncode == 0
        d.wait_for(lambda: state("w1").get("state") == "ready")
        assert pids_of(leaf) == [state("w1")["pid"]] and state("w1")["pid"] != w1["pid"]

        before = state("w2")["pid"]
        assert ctl("restart", "w2").returncode == 0
        d.wait_for(lambda: state("w2").get("state") == "ready" and state("w2")["pid"] != before)

        events = ctl("events", "--workload", "w1").stdout.splitlines()
        trail = [line.split(" -> ")[1].split(" ")[0] for line in events]
        assert trail == ["starting", "ready", "stopping", "stopped", "pending", "starting", "ready"]
        r = ctl("stop", "nope")
        assert r.returncode == 1 and r.stderr == "error: no workload named 'nope'\n"
    finally:
        d.stop()


def test_freeze_stops_a_busy_workload_until_thawed(tmp_path: Path, cgroup_root: Path) -> None:
    text = '[workloads.busy]\ncommand = ["sh", "-c", "while :; do :; done"]\n'
    d = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "interactive/busy"

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NXRCTL, "--socket", str(d.socket), *args], capture_output=True, text=True, timeout=60
        )

    def usage() -> int:
        stat = dict(line.split() for line in (leaf / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"])

    try:
        d.wait_for(lambda: leaf.exists() and pids_of(leaf))
        assert ctl("freeze", "busy").returncode == 0
        d.wait_for(lambda: "frozen 1" in (leaf / "cgroup.events").read_text())
        before = usage()
        time.sleep(1.5)
        assert usage() - before < 50_000  # no CPU time while frozen
        assert ctl("thaw", "busy").returncode == 0
        d.wait_for(lambda: "frozen 0" in (leaf / "cgroup.events").read_text())
        before = usage()
        time.sleep(1.5)
        assert usage() - before > 200_000  # running again
        assert ctl("freeze", "busy").returncode == 0
    finally:
        assert d.stop() == 0  # a frozen workload still stops (nxr thaws it first)
    assert not leaf.exists()
