"""nxrd as an operator runs it, on a real cgroup v2 kernel: issue 3's acceptance items."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from nxrd.kernel.discovery import discover
from nxrd.kernel.spawn import spawn_in_cgroup
from nxrd.model.units import parse_cpu_list
from nxrd.plan import make_plan
from nxrd.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
NXRD = str(Path(sys.executable).parent / "nxrd")
NXRCTL = str(Path(sys.executable).parent / "nxrctl")
PY = sys.executable

FORKER = textwrap.dedent(
    """
    import os, threading, time
    for _ in range(3):
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    if os.fork() == 0:
        for _ in range(2):
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        time.sleep(600)
    time.sleep(600)
    """
)


class Nxrd:
    """One nxrd process with its own cgroup root, state directory and event log."""

    def __init__(self, tmp: Path, profile: str, cgroup_root: Path | None) -> None:
        self.tmp, self.cgroup_root = tmp, cgroup_root
        self.profile_file = tmp / "profile.toml"
        self.profile_file.write_text(profile)
        self.state = tmp / "state"
        self.log = tmp / f"nxrd-{uuid.uuid4().hex[:4]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, *extra: str, in_cgroup: Path | None = None, env: dict[str, str] | None = None
    ) -> Nxrd:
        """Run nxrd; in_cgroup starts it inside that cgroup, as systemd starts a unit."""
        self.log = self.tmp / f"nxrd-{uuid.uuid4().hex[:4]}.log"
        self.socket = self.tmp / "nxrd.sock"
        argv = [
            NXRD,
            "--profile",
            str(self.profile_file),
            "--state-dir",
            str(self.state),
            "--socket",
            str(self.socket),
            *extra,
        ]
        if self.cgroup_root is not None:
            argv += ["--cgroup-root", str(self.cgroup_root)]
        err = self.log.open("wb")
        full_env = {**os.environ, **(env or {})}
        # The unit's UMask=0077: whatever workloads and other users must reach, nxrd
        # gives its mode on purpose.
        if in_cgroup is not None:
            self.proc = spawn_in_cgroup(
                argv, in_cgroup, env=full_env, stdout=subprocess.DEVNULL, stderr=err, umask=0o077
            )
        else:
            self.proc = subprocess.Popen(
                argv, env=full_env, stdout=subprocess.DEVNULL, stderr=err, umask=0o077
            )
        return self

    def events(self, workload: str | None = None) -> list[tuple[str, str, str]]:
        """(workload, new state, cause) of every event line so far."""
        out = []
        for line in self.log.read_text().splitlines():
            m = re.match(r"\S+ (\S+): (\S+) -> (\S+) \((.*)\)$", line)
            if m and (workload is None or m.group(1) == workload):
                out.append((m.group(1), m.group(3), m.group(4)))
        return out

    def wait_for(self, check: Callable[[], object], timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nxrd exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out; nxrd said:\n{self.log.read_text()}")

    def state_of(self, workload: str) -> dict[str, object]:
        try:
            return json.loads((self.state / "state.json").read_text())["workloads"][workload]
        except (OSError, ValueError, KeyError):
            return {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def pids_of(cgroup: Path) -> list[int]:
    return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_every_thread_of_every_process_is_pinned_as_planned(
    tmp_path: Path, cgroup_root: Path
) -> None:
    text = f'[workloads.chat]\ncommand = ["{PY}", "-c", """{FORKER}"""]\nclass = "latency-critical"\ncpus = 1\nmemory_max = "256M"\n'
    d = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "latency-critical/chat"
    try:
        d.wait_for(lambda: leaf.exists() and len(pids_of(leaf)) == 2)
        plan = make_plan(parse_profile(text), discover(gpus=False))
        planned = plan.workload("chat")
        for filename, value in planned.files.items():
            assert (leaf / filename).read_text().strip() == value, filename
        # nxrd's own threads keep off chat's core (on the VM's 2 CPUs: the other one)
        assert not parse_cpu_list(plan.daemon_cpus) & parse_cpu_list(planned.cpus)
        assert (cgroup_root / "nxrd/cpuset.cpus").read_text().strip() == plan.daemon_cpus
        assert d.proc is not None
        for task in Path(f"/proc/{d.proc.pid}/task").iterdir():
            allowed = (task / "status").read_text()
            assert f"Cpus_allowed_list:\t{plan.daemon_cpus}\n" in allowed, task.name
        tasks = [(p, t.name) for p in pids_of(leaf) for t in Path(f"/proc/{p}/task").iterdir()]
        assert len(tasks) >= 7  # 4 threads in the workload, 3 in its grandchild
        for pid, tid in tasks:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            assert f"Cpus_allowed_list:\t{planned.cpus}\n" in status
        environ = Path(f"/proc/{pids_of(leaf)[0]}/environ").read_bytes().split(b"\0")
        assert b"OMP_NUM_THREADS=1" in environ and not any(
            e.startswith(b"NXR_KERNEL") for e in environ
        )
    finally:
        assert d.stop() == 0
    assert not leaf.exists()


def test_oom_kill_is_reported_and_restarted(tmp_path: Path, cgroup_root: Path) -> None:
    hog = "b = bytearray(300 << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1"
    text = (
        f'[workloads.hog]\ncommand = ["{PY}", "-c", "{hog}"]\nmemory_max = "64M"\nswap_max = "0"\n'
        'restart = {policy = "on-failure", delay = "200ms", max_restarts = 10}\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(lambda: sum(e[1] == "starting" for e in d.events("hog")) >= 2)
        exits = [e for e in d.events("hog") if e[1] == "exited"]
        assert exits and exits[0][2] == "oom"
    finally:
        d.stop()


def test_a_crash_loop_backs_off_then_fails(tmp_path: Path, cgroup_root: Path) -> None:
    text = (
        '[workloads.crash]\ncommand = ["sh", "-c", "exit 1"]\n'
        'restart = {delay = "200ms", max_delay = "2s", max_restarts = 3}\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(lambda: any(e[1] == "failed" for e in d.events("crash")))
        delays = [
            float(m.group(1))
            for e in d.events("crash")
            if e[1] == "backoff"
            if (m := re.search(r"in ([0-9.]+)s$", e[2]))
        ]
        assert len(delays) == 3 and delays[0] < delays[1] < delays[2]
        assert d.events("crash")[-1][2] == "exit code 1; 3 restarts within 5m, max_restarts is 3"
        # failed is terminal until an operator starts it: a crash of nxrd does not end it
        d.stop(signal.SIGKILL)
        d.start()
        d.wait_for(lambda: d.events("crash"))
        time.sleep(2)
        assert [e[1] for e in d.events("crash")] == ["failed"]
    finally:
        d.stop()


def test_an_operators_stop_and_a_failure_outlast_a_clean_restart_of_nxrd(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """On SIGTERM nxrd stops every workload; the next one starts those again, but not one an
    operator had stopped nor one that had failed."""
    text = (
        '[workloads.held]\ncommand = ["sleep", "600"]\n'
        '[workloads.crash]\ncommand = ["sh", "-c", "exit 1"]\n'
        'restart = {delay = "100ms", max_restarts = 1}\n'
        '[workloads.run]\ncommand = ["sleep", "600"]\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(
            lambda: (
                d.state_of("held").get("state") == "ready"
                and d.state_of("crash").get("state") == "failed"
            )
        )
        r = subprocess.run(
            [NXRCTL, "--socket", str(d.socket), "stop", "held"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        d.wait_for(lambda: d.state_of("held").get("state") == "stopped")
    finally:
        assert d.stop() == 0  # SIGTERM: nxrd stops the rest, then exits
    assert d.state_of("run")["state"] == "stopped"
    d.start()
    try:
        d.wait_for(lambda: d.state_of("run").get("state") == "ready")
        time.sleep(1)
        assert d.state_of("held")["state"] == "stopped"
        assert d.state_of("crash")["state"] == "failed"
        assert [e[1:] for e in d.events("held")] == [
            ("stopped", "kept from before: stopped by operator (signal SIGTERM)")
        ]
    finally:
        d.stop()


def test_stop_leaves_no_process_and_no_cgroup(tmp_path: Path, cgroup_root: Path) -> None:
    stubborn = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "os.fork(); os.fork(); time.sleep(600)"
    )
    text = (
        f'[workloads.stubborn]\ncommand = ["{PY}", "-c", "{stubborn}"]\nstop = {{timeout = "1s"}}\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "interactive/stubborn"
    d.wait_for(lambda: leaf.exists() and len(pids_of(leaf)) == 4)
    pids = pids_of(leaf)
    assert d.stop() == 0
    assert not any(alive(p) for p in pids)
    assert not leaf.exists()
    assert d.events("stubborn")[-1][1:] == ("stopped", "nxrd exiting (signal SIGKILL)")


def test_workloads_survive_sigkill_of_nxrd_and_are_adopted(
    tmp_path: Path, cgroup_root: Path
) -> None:
    text = "".join(
        f'[workloads.w{i}]\ncommand = ["sleep", "600"]\nrestart = {{policy = "always", delay = "100ms"}}\n'
        for i in range(3)
    )
    first = Nxrd(tmp_path, text, cgroup_root).start()
    first.wait_for(lambda: all(first.state_of(f"w{i}").get("state") == "ready" for i in range(3)))
    before = {f"w{i}": first.state_of(f"w{i}")["pid"] for i in range(3)}
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert all(alive(int(p)) for p in before.values())  # type: ignore[call-overload]
    second = first.start()
    try:
        second.wait_for(lambda: len(second.events()) >= 6)
        assert {w: second.state_of(w)["pid"] for w in before} == before
        assert all(e[1] != "starting" or "adopted" in e[2] for e in second.events())
        os.kill(int(before["w1"]), signal.SIGKILL)  # type: ignore[call-overload]
        second.wait_for(
            lambda: (
                second.state_of("w1").get("pid") not in (None, before["w1"])
                and second.state_of("w1").get("state") == "ready"
            )
        )
        assert [e[2] for e in second.events("w1") if e[1] == "exited"] == ["signal SIGKILL"]
        assert {w: second.state_of(w)["pid"] for w in ("w0", "w2")} == {
            w: before[w] for w in ("w0", "w2")
        }
    finally:
        second.stop()


def test_a_truncated_state_file_is_rebuilt_from_the_kernel(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """nxrd killed, and its state file cut short: the next nxrd takes the workloads over from
    their shims' records and their leaves, and starts none a second time."""
    text = '[workloads.a]\ncommand = ["sleep", "600"]\n[workloads.b]\ncommand = ["sleep", "601"]\n'
    first = Nxrd(tmp_path, text, cgroup_root).start()
    first.wait_for(lambda: all(first.state_of(w).get("state") == "ready" for w in "ab"))
    leaves = [cgroup_root / "interactive/a", cgroup_root / "interactive/b"]
    before = [pids_of(leaf) for leaf in leaves]
    first.stop(signal.SIGKILL)
    state = first.state / "state.json"
    state.write_text(state.read_text()[:40])
    second = first.start()
    try:
        second.wait_for(lambda: all(second.state_of(w).get("state") == "ready" for w in "ab"))
        assert [pids_of(leaf) for leaf in leaves] == before  # the same processes, alone
        said = [c for w, _, c in second.events() if w == "nxrd"]
        assert any(c.startswith(f"state file {state} unreadable: found a, b running") for c in said)
    finally:
        second.stop()


def test_a_pool_of_one_runs_its_workloads_one_at_a_time_by_priority(
    tmp_path: Path, cgroup_root: Path
) -> None:
    text = "[pools.gpu]\nslots = 1\n" + "".join(
        f'[workloads.{n}]\ncommand = ["sleep", "0.5"]\npool = "gpu"\npriority = {p}\nrestart = {{policy = "no"}}\n'
        for n, p in [("low", 10), ("high", 900), ("mid", 500)]
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(lambda: sum(e[1] == "stopped" for e in d.events()) == 3)
        order = [e[0] for e in d.events() if e[1] == "starting"]
        assert order == ["high", "mid", "low"]
        running = 0
        for _, new, _ in d.events():
            running += {"starting": 1, "exited": -1}.get(new, 0)
            assert running <= 1
    finally:
        d.stop()


def test_a_profile_that_does_not_fit_changes_nothing(tmp_path: Path, cgroup_root: Path) -> None:
    text = '[workloads.big]\ncommand = ["true"]\nclass = "latency-critical"\ncpus = 64\n'
    d = Nxrd(tmp_path, text, cgroup_root).start()
    assert d.proc is not None and d.proc.wait(timeout=60) == 1
    lines = d.log.read_text().splitlines()
    assert len(lines) == 1 and "workloads.big.cpus: big needs 64 exclusive CPUs" in lines[0]
    assert not cgroup_root.exists()


def test_a_new_nxrd_reconciles_with_a_changed_profile(tmp_path: Path, cgroup_root: Path) -> None:
    keep = '[workloads.keep]\ncommand = ["sleep", "600"]\nmemory_max = "100M"\n'
    gone = '[workloads.gone]\ncommand = ["sleep", "600"]\n'
    change = '[workloads.change]\ncommand = ["sleep", "600"]\n'
    first = Nxrd(tmp_path, keep + gone + change, cgroup_root).start()
    names = ("keep", "gone", "change")
    first.wait_for(lambda: all(first.state_of(n).get("state") == "ready" for n in names))
    before = {n: first.state_of(n)["pid"] for n in names}
    first.stop(signal.SIGKILL)
    # memory_max changes live; change's command changes (restart); gone is removed; new is added
    first.profile_file.write_text(
        keep.replace("100M", "200M")
        + change.replace('"600"', '"601"')
        + '[workloads.new]\ncommand = ["sleep", "600"]\n'
    )
    second = first.start()
    try:
        second.wait_for(
            lambda: (
                all(second.state_of(n).get("state") == "ready" for n in ("keep", "change", "new"))
                and second.state_of("change").get("pid") != before["change"]
            )
        )
        assert second.state_of("keep")["pid"] == before["keep"]
        assert (cgroup_root / "interactive/keep/memory.max").read_text().strip() == str(200 << 20)
        assert not alive(int(before["gone"])) and not (cgroup_root / "interactive/gone").exists()  # type: ignore[call-overload]
        assert not alive(int(before["change"]))  # type: ignore[call-overload]
        assert ("change", "stopping", "profile changed") in second.events("change")
    finally:
        second.stop()
