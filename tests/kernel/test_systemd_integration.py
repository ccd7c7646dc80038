"""nxrd with the pieces systemd provides: a delegated cgroup, and journald."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.errors import KernelError
from nxrd.kernel.spawn import spawn_in_cgroup
from tests.kernel.conftest import kill_tree
from tests.kernel.test_daemon import Nxrd, pids_of

ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = "+cpuset +cpu +io +memory +pids"


@pytest.fixture
def unit_cgroup() -> Iterator[Path]:
    """<slice>/nxrd.service with the controllers delegated, as systemd's Delegate=yes does."""
    slice_ = Path(f"/sys/fs/cgroup/nxr-test-{uuid.uuid4().hex[:6]}.slice")
    slice_.mkdir()
    (slice_ / "cgroup.subtree_control").write_text(CONTROLLERS)
    unit = slice_ / "nxrd.service"
    unit.mkdir()
    yield unit
    kill_tree(slice_)


def test_under_delegation_nxrd_owns_its_units_cgroup(tmp_path: Path, unit_cgroup: Path) -> None:
    d = Nxrd(tmp_path, '[workloads.w]\ncommand = ["sleep", "600"]\n', None)
    d.start(in_cgroup=unit_cgroup)
    leaf = unit_cgroup / "interactive/w"
    try:
        d.wait_for(lambda: leaf.exists() and pids_of(leaf))
        assert d.proc is not None and pids_of(unit_cgroup / "nxrd")[0] == d.proc.pid
        assert pids_of(unit_cgroup) == []  # no internal processes left in the unit's cgroup
        assert set((unit_cgroup / "cgroup.subtree_control").read_text().split()) >= {
            "cpuset",
            "cpu",
            "io",
            "memory",
            "pids",
        }
        assert not Path("/sys/fs/cgroup/nxr").exists()  # nothing outside the delegated tree
    finally:
        assert d.stop() == 0
    assert not leaf.exists()


@pytest.fixture
def two_units() -> Iterator[tuple[Path, Path]]:
    """units/*.service as systemd lays them out: nxrd.service, a plain cgroup, and beside it
    nxr-workloads.service, delegated, holding its first process (sleep infinity)."""
    slice_ = Path(f"/sys/fs/cgroup/nxr-test-{uuid.uuid4().hex[:6]}.slice")
    slice_.mkdir()
    (slice_ / "cgroup.subtree_control").write_text(CONTROLLERS)
    nxrd_unit, workloads = slice_ / "nxrd.service", slice_ / "nxr-workloads.service"
    nxrd_unit.mkdir()
    workloads.mkdir()
    holder = spawn_in_cgroup(["sleep", "infinity"], workloads)
    yield nxrd_unit, workloads
    kill_tree(slice_)
    holder.wait(timeout=30)


def test_systemd_can_restart_a_killed_nxrd_and_the_workloads_keep_their_pids(
    tmp_path: Path, two_units: tuple[Path, Path]
) -> None:
    """Before, nxrd built the workloads' tree in its own unit's cgroup: after a kill -9,
    systemd could not put the new nxrd there (the kernel refuses a process in a cgroup that
    passes controllers on to children: 219/CGROUP) and retried for ever while the
    workloads ran unsupervised. Now the tree is nxr-workloads.service's and nxrd's unit
    cgroup stays a plain leaf that systemd can always start it in."""
    nxrd_unit, workloads = two_units
    holder = pids_of(workloads)[0]
    text = '[workloads.w]\ncommand = ["sleep", "600"]\n[workloads.b]\ncommand = ["sleep", "601"]\nclass = "batch"\n'
    d = Nxrd(tmp_path, text, workloads)
    d.start(in_cgroup=nxrd_unit)
    leaves = [workloads / "interactive/w", workloads / "batch/b"]
    try:
        # ready in the state file (written after the leaves fill): it names the shims
        d.wait_for(lambda: all(d.state_of(w).get("state") == "ready" for w in ("w", "b")))
        assert d.proc is not None and pids_of(nxrd_unit) == [d.proc.pid]  # nxrd stays home
        assert pids_of(workloads) == []  # the holder moved into the tree's own leaf
        shims = [int(d.state_of(w)["shim_pid"]) for w in ("w", "b")]  # type: ignore[call-overload]
        assert sorted(pids_of(workloads / "nxrd")) == sorted([holder, *shims])
        # what systemd met before: the kernel refuses a process in a cgroup that passes
        # controllers on to running workloads
        with pytest.raises(KernelError, match="cannot start"):
            spawn_in_cgroup(["true"], workloads)
        before = [pids_of(leaf) for leaf in leaves]
        d.stop(signal.SIGKILL)
        d.start(in_cgroup=nxrd_unit)  # as systemd's Restart=on-failure does
        d.wait_for(
            lambda: (
                ("nxrd", "-", "took over 2 running workloads")
                in [(w, n, c.split(";")[0]) for w, n, c in d.events()]
            )
        )
        assert [pids_of(leaf) for leaf in leaves] == before
        assert d.proc is not None and pids_of(nxrd_unit) == [d.proc.pid]
    finally:
        assert d.stop() == 0
    assert not any(leaf.exists() for leaf in leaves)
    assert pids_of(workloads / "nxrd") == [holder]  # the shims left with their workloads


@pytest.fixture
def journald() -> Iterator[None]:
    """systemd-journald running on its own, as on a host where nxrd runs under systemd."""
    proc = subprocess.Popen(
        ["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        if Path("/run/systemd/journal/socket").exists():
            break
        time.sleep(0.1)
    else:
        pytest.fail("systemd-journald did not start")
    yield
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    # Other tests read nxrd's events from stderr: leave no journal socket behind.
    subprocess.run(["rm", "-rf", "/run/systemd/journal"], check=True)


def journal(*matches: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["journalctl", "-o", "json", "--no-pager", *matches],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_output_and_events_go_to_the_journal_with_the_workloads_name(
    tmp_path: Path, cgroup_root: Path, journald: None
) -> None:
    name = f"talk{uuid.uuid4().hex[:4]}"
    text = (
        f'[workloads.{name}]\ncommand = ["sh", "-c", "echo hello from {name}; echo oops >&2"]\n'
        'restart = {policy = "no"}\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(
            lambda: any(e.get("NXR_EVENT") == "stopped" for e in journal(f"NXR_WORKLOAD={name}"))
        )
        entries = journal(f"NXR_WORKLOAD={name}")
        output = [e["MESSAGE"] for e in entries if "NXR_EVENT" not in e]
        assert output == [f"hello from {name}", "oops"]
        events = [(e["NXR_OLD_STATE"], e["NXR_EVENT"]) for e in entries if "NXR_EVENT" in e]
        assert events == [
            ("pending", "starting"),
            ("starting", "ready"),
            ("ready", "exited"),
            ("exited", "stopped"),
        ]
        assert [e["NXR_CAUSE"] for e in entries if e.get("NXR_EVENT") == "exited"] == [
            "exit code 0"
        ]
        # The log file gets the output too.
        assert (d.state / "logs" / f"{name}.log").read_text().count("hello from") == 1
    finally:
        d.stop()
    assert os.path.exists("/run/systemd/journal/socket")


def test_sd_notify_ready_status_watchdog_reloading_stopping(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """What systemd's Type=notify and WatchdogSec= receive from nxrd."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                messages.extend(sock.recv(4096).decode().splitlines())

    d = Nxrd(tmp_path, '[workloads.w]\ncommand = ["sleep", "600"]\n', cgroup_root)
    d.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    try:
        d.wait_for(lambda: (drain(), "STATUS=1 workloads: 1 ready" in messages)[1])
        assert messages[0] == "READY=1"
        time.sleep(3)
        drain()
        assert messages.count("WATCHDOG=1") >= 2  # every second for a 2 s watchdog
        leaf = cgroup_root / "interactive/w"
        environ = Path(f"/proc/{pids_of(leaf)[0]}/environ").read_bytes()
        assert b"NOTIFY_SOCKET" not in environ and b"WATCHDOG_USEC" not in environ
        messages.clear()
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)  # a reload of the configured profile
        d.wait_for(lambda: (drain(), "READY=1" in messages)[1])
        assert messages.index("RELOADING=1") < messages.index("READY=1")
        d.wait_for(lambda: ("nxrd", "-", "reload by SIGHUP: 0 changes") in d.events())
    finally:
        assert d.stop() == 0
    drain()
    assert "STOPPING=1" in messages
    sock.close()


def test_the_unit_files_verify(tmp_path: Path) -> None:
    unit = (ROOT / "units/nxrd.service").read_text()
    # The packaged path of nxrd: here, the one in the virtualenv.
    bindir = str(Path(sys.executable).parent)
    unit = unit.replace("/usr/bin/nxrd", f"{bindir}/nxrd").replace(
        "/usr/bin/nxrctl", f"{bindir}/nxrctl"
    )
    (tmp_path / "nxrd.service").write_text(unit)
    # nxrd.service requires it: verified together, from the same directory
    for other in ("nxr-workloads.service", "nxr.slice"):
        (tmp_path / other).write_text((ROOT / "units" / other).read_text())
    units = [str(tmp_path / u) for u in ("nxrd.service", "nxr-workloads.service", "nxr.slice")]
    r = subprocess.run(
        ["systemd-analyze", "verify", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if ".service" in line or "nxr.slice" in line
    ]
    assert r.returncode == 0 and problems == [], r.stdout + r.stderr
