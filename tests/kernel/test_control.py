"""nxrd steered only through nxrctl and curl, on a real kernel."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nxrd.api.handlers import MUTATIONS
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
        return _curl_show(d.socket, name)

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


def test_a_freeze_outlasts_a_sigkill_of_nxrd_and_thaw_still_works(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """Before, the next nxrd believed the workload thawed: `thaw` did nothing and the
    workload stayed frozen for good."""
    text = '[workloads.busy]\ncommand = ["sh", "-c", "while :; do :; done"]\n'
    first = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "interactive/busy"

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NXRCTL, "--socket", str(first.socket), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def usage() -> int:
        stat = dict(line.split() for line in (leaf / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"])

    first.wait_for(lambda: first.state_of("busy").get("state") == "ready")
    pid = first.state_of("busy")["pid"]
    assert ctl("freeze", "busy").returncode == 0
    first.wait_for(lambda: first.state_of("busy").get("frozen_by") == "operator")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = first.start()
    try:
        second.wait_for(lambda: any("still frozen" in e[2] for e in second.events("busy")))
        shown = _curl_show(second.socket, "busy")
        assert (shown["pid"], shown["frozen"], shown["frozen_by"]) == (pid, True, "operator")
        assert "frozen 1" in (leaf / "cgroup.events").read_text()
        before = usage()
        time.sleep(1.5)
        assert usage() - before < 50_000  # still no CPU time
        assert ctl("thaw", "busy").returncode == 0
        second.wait_for(lambda: "frozen 0" in (leaf / "cgroup.events").read_text())
        before = usage()
        time.sleep(1.5)
        assert usage() - before > 200_000  # running again, the same process
        assert _curl_show(second.socket, "busy")["pid"] == pid
    finally:
        assert second.stop() == 0
    assert not leaf.exists()


BEFORE = """
[host]
metrics = "127.0.0.1:19464"

[workloads.w1]
command = ["sh", "-c", "echo hello-from-w1; exec sleep 600"]
cpuset = "0"
memory_max = "64M"

[workloads.w2]
command = ["sleep", "600"]
class = "batch"
"""

AFTER = """
[host]
metrics = "127.0.0.1:19464"

[workloads.w1]
command = ["sh", "-c", "echo hello-from-w1; exec sleep 600"]
cpuset = "0-1"
memory_max = "96M"

[workloads.w2]
command = ["sleep", "601"]
class = "batch"

[workloads.w3]
command = ["sleep", "602"]
class = "background"
"""


def _ctl(d: Nxrd) -> Callable[..., subprocess.CompletedProcess[str]]:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NXRCTL, "--socket", str(d.socket), *args], capture_output=True, text=True, timeout=60
        )

    return ctl


def _curl_show(sock: Path, name: str) -> dict[str, object]:
    """One workload through curl: polling with nxrctl costs seconds a call in the VM."""
    r = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(sock), f"http://localhost/v1/workloads/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return {}
    return doc if "error" not in doc else {}


def _cpus_allowed(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return status.split("Cpus_allowed_list:\t")[1].split("\n")[0]


def test_apply_changes_cpuset_live_and_restarts_only_what_must(
    tmp_path: Path, cgroup_root: Path
) -> None:
    d = Nxrd(tmp_path, BEFORE, cgroup_root).start()
    ctl = _ctl(d)

    def show(name: str) -> dict[str, object]:
        return _curl_show(d.socket, name)

    w1_leaf = cgroup_root / "interactive/w1"
    changed = tmp_path / "changed.toml"
    changed.write_text(AFTER)
    try:
        d.wait_for(
            lambda: show("w1").get("state") == "ready" and show("w2").get("state") == "ready"
        )
        pid1, pid2 = show("w1")["pid"], show("w2")["pid"]
        assert isinstance(pid1, int) and _cpus_allowed(pid1) == "0"
        metrics = subprocess.run(
            ["curl", "-sS", "http://127.0.0.1:19464/metrics"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert 'nxr_workload_state{class="interactive",state="ready",workload="w1"} 1.0' in metrics
        assert 'nxr_workload_memory_limit_bytes{class="interactive",workload="w1"}' in metrics

        r = ctl("diff", str(changed))
        assert r.returncode == 0, r.stderr
        rows = {tuple(line.split()[:2]): line for line in r.stdout.splitlines()[1:]}
        assert rows[("w1", "cpuset.cpus")].endswith("live, no restart")
        assert rows[("w1", "memory.max")].endswith("live, no restart")
        assert rows[("w2", "command")].endswith("restarts the workload")
        assert rows[("w3", "added")].endswith("starts")
        assert show("w1")["cpus"] == "0"  # a diff changes nothing

        r = ctl("apply", str(changed))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == f"applied {len(rows)} changes from {changed}"
        # Live: same process, new cores and limit, no restart.
        assert show("w1")["pid"] == pid1 and _cpus_allowed(pid1) == "0-1"
        assert (w1_leaf / "memory.max").read_text().strip() == str(96 << 20)
        d.wait_for(lambda: show("w2").get("state") == "ready" and show("w2")["pid"] != pid2)
        d.wait_for(lambda: show("w3").get("state") == "ready")
        assert show("w1")["pid"] == pid1 and show("w1")["restarts"] == 0

        x = json.loads(ctl("explain", "w1", "-o", "json").stdout)
        cpus = next(r for r in x["resources"] if r["resource"] == "cpuset.cpus")
        assert cpus["profile"] == "cpuset = 0-1" and cpus["kernel"] == "0-1"
        assert cpus["by"] == f"nxrctl apply by uid 0 ({changed})"
        assert "LAST WRITTEN BY" in ctl("explain", "w1").stdout
        running = json.loads(ctl("plan", "-o", "json").stdout)
        assert next(w for w in running["workloads"] if w["name"] == "w1")["cpus"] == "0-1"

        # All or nothing: a profile that does not fit changes nothing, in one line.
        bad = tmp_path / "bad.toml"
        bad.write_text(AFTER.replace('cpuset = "0-1"', "cpus = 64"))
        r = ctl("apply", str(bad))
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: ")
        assert _cpus_allowed(pid1) == "0-1" and show("w1")["cpus"] == "0-1"
        bad.write_text("[workloads.w1]\ncommand = 'sleep'\n")
        r = ctl("apply", str(bad))
        assert r.returncode == 1 and "w1.command" in r.stderr and show("w3")["state"] == "ready"

        # reload: the configured file again; w3 goes, w1 keeps its process.
        r = ctl("reload")
        assert r.returncode == 0, r.stderr
        assert show("w1")["pid"] == pid1 and _cpus_allowed(pid1) == "0"
        d.wait_for(lambda: show("w3") == {})  # no longer declared
        assert not (cgroup_root / "background/w3").exists()

        assert "hello-from-w1" in ctl("logs", "w1").stdout
        top = ctl("top", "-n", "1")
        assert top.returncode == 0 and "nxr top" in top.stdout and "w1" in top.stdout
    finally:
        assert d.stop() == 0


def test_nxrd_keeps_applied_profile_across_its_restart(tmp_path: Path, cgroup_root: Path) -> None:
    d = Nxrd(tmp_path, BEFORE, cgroup_root).start()
    ctl = _ctl(d)
    changed = tmp_path / "changed.toml"
    changed.write_text(AFTER)
    try:
        d.wait_for(lambda: d.socket.exists() and _curl_show(d.socket, "w1").get("pid"))
        assert ctl("apply", str(changed)).returncode == 0
        pid1 = _curl_show(d.socket, "w1")["pid"]
        d.stop(signal.SIGKILL)
        d.start()
        d.wait_for(lambda: _curl_show(d.socket, "w3").get("state") == "ready")
        w1 = _curl_show(d.socket, "w1")
        assert w1["pid"] == pid1 and w1["cpus"] == "0-1"  # adopted, applied profile kept
    finally:
        d.stop()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=60,
        user=65534,
        group=65534,
        extra_groups=[],
    )


def test_other_users_may_read_but_never_steer(tmp_path: Path, cgroup_root: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="nxr-e2e-"))  # nobody must reach the socket
    shared.chmod(0o755)
    sock = shared / "nxrd.sock"
    d = Nxrd(tmp_path, BEFORE, cgroup_root).start("--socket", str(sock), "--api-read", "all")
    d.socket = sock
    ctl = _ctl(d)

    def curl(method: str, path: str, data: str | None = None) -> dict[str, object]:
        argv = ["curl", "-sS", "--unix-socket", str(sock), "-X", method]
        argv += ["--data-binary", data] if data is not None else []
        r = as_nobody(*argv, f"http://localhost/v1/{path}")
        return json.loads(r.stdout)

    try:
        d.wait_for(lambda: sock.exists() and _curl_show(sock, "w1").get("pid"))
        before = json.loads(ctl("status", "-o", "json").stdout)["workloads"]
        assert [w["name"] for w in curl("GET", "workloads")["workloads"]] == ["w1", "w2"]
        profile = json.dumps({"files": [{"name": "x.toml", "text": AFTER}]})
        for method, path, data in [
            *[("POST", f"workloads/w1/{verb}", None) for verb in MUTATIONS],
            ("POST", "apply", profile),
            ("POST", "reload", None),
        ]:
            err = curl(method, path, data)["error"]
            assert isinstance(err, dict) and err["code"] == "forbidden", (path, err)
        # A dry run shows env's values: refused too. Garbage and oversized bodies get an
        # error answer; the daemon keeps serving.
        assert curl("POST", "apply?dry_run=1", "not json {")["error"]["code"] == "forbidden"  # type: ignore[index]
        body = shared / "big"
        body.write_text("x" * (2 << 20))
        body.chmod(0o644)
        out = as_nobody(
            "curl",
            "-sS",
            "--unix-socket",
            str(sock),
            "--data-binary",
            f"@{body}",
            "http://localhost/v1/apply",
        )
        assert json.loads(out.stdout)["error"]["code"] == "too_large"
        after = json.loads(ctl("status", "-o", "json").stdout)["workloads"]
        assert [(w["name"], w["pid"], w["cpus"]) for w in after] == [
            (w["name"], w["pid"], w["cpus"]) for w in before
        ]
        assert d.proc is not None and d.proc.poll() is None
    finally:
        d.stop()
        sock.unlink(missing_ok=True)
        (shared / "big").unlink(missing_ok=True)
        shutil.rmtree(shared)  # with cpus/, the NXR_CPUS_FILE files nxrd keeps beside its socket
