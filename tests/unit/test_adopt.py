"""Adoption: a new nxrd takes over what the one before left running, and trusts the state
file only as far as the kernel and the shim's record confirm it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from nxrd.daemon.adopt import Adopt, Clear, Planned, Remove, Restore, Seen, candidates, decide
from nxrd.daemon.core import Daemon
from nxrd.errors import NxrError
from nxrd.kernel.fake_host import FakeHost
from nxrd.kernel.host import LinuxHost
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES

PLANNED = {
    "chat": Planned("latency-critical/chat", "k1"),
    "embed": Planned("batch/embed", "k2"),
}


def running(pid: int, shim: int, cgroup: str, launch: str = "k1") -> dict[str, object]:
    return {
        "state": "ready",
        "pid": pid,
        "shim_pid": shim,
        "cgroup": cgroup,
        "launch": launch,
        "started_at": 5.0,
    }


def test_a_confirmed_workload_is_adopted_and_restarted_only_if_launched_differently() -> None:
    saved = {
        "chat": running(100, 99, "latency-critical/chat"),
        "embed": running(200, 199, "batch/embed", launch="old"),
    }
    seen = {
        "chat": Seen({"pid": 100, "shim_pid": 99}, (100, 101)),
        "embed": Seen({"pid": 200, "shim_pid": 199}, (200,)),
    }
    assert candidates(saved, PLANNED) == ["chat", "embed"]
    assert decide(saved, PLANNED, seen) == [
        Adopt("chat", 100, 99, 5.0, "ready", restart=False),
        Adopt("embed", 200, 199, 5.0, "ready", restart=True),
    ]


def test_what_the_kernel_does_not_confirm_is_cleared_not_adopted() -> None:
    """After a reboot the recorded PIDs may be unrelated processes."""
    saved = {"chat": running(100, 99, "latency-critical/chat")}
    for seen in (
        {},  # no shim record, nothing in the leaf
        {"chat": Seen({"pid": 100, "shim_pid": 99}, (555,))},  # its pid is not in the leaf
        {"chat": Seen({"pid": 100, "shim_pid": 42}, (100,))},  # another shim's record
    ):
        assert decide(saved, PLANNED, seen) == [Clear("chat")]


def test_gone_or_moved_workloads_lose_their_old_leaf_and_stopped_ones_keep_their_state() -> None:
    saved = {
        "old": running(300, 299, "batch/old"),  # no longer in the profile
        "chat": running(100, 99, "interactive/chat"),  # moved to another class
        "embed": {"state": "stopped", "reason": "by nxrctl", "held": True, "launch": "k2"},
        "gone": {"state": "failed", "launch": "k9"},  # stopped and no longer declared
    }
    assert candidates(saved, PLANNED) == []
    assert decide(saved, PLANNED, {}) == [
        Remove("old", "batch/old"),
        Remove("chat", "interactive/chat"),
        Restore("embed", "stopped", "by nxrctl", None, True),
    ]
    # a stopped workload launched differently now starts afresh: nothing restored
    saved["embed"]["launch"] = "k-old"
    assert decide(saved, PLANNED, {}) == [
        Remove("old", "batch/old"),
        Remove("chat", "interactive/chat"),
    ]


PROFILE = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
"""


def left_running(
    tmp_path: Path,
    profile: str = PROFILE,
    before: Callable[[Daemon], None] = lambda d: None,
) -> tuple[FakeHost, Callable[[], Daemon], int]:
    """A first nxrd on a fake host that started chat (and the profile's others) and went
    away leaving them running, with their shims' records and their leaves as the kernel
    would show them: the host, a maker of the next nxrd on the same state directory, and
    chat's pid. before(first): what the first did just before it went."""
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    (tmp_path / "p.toml").write_text(profile)

    def nxrd() -> Daemon:
        sock = str(tmp_path / "nxrd.sock")
        return Daemon(
            [str(tmp_path / "p.toml")], str(tmp_path / "state"), socket_path=sock, host=host
        )

    first = nxrd()
    first.start()
    first.sup.tick(0.0)
    before(first)
    first.step(1.0, stopping=False)  # writes the state file
    first.close(leave=True)
    for rec in first.sup.records.values():
        assert rec.pid is not None
        host.statuses[first.runtime.status_file(rec.name)] = {
            "pid": rec.pid,
            "shim_pid": rec.shim_pid,
        }
        host.fs.dirs[rec.plan.cgroup]["cgroup.procs"] = f"{rec.pid}\n"
    pid = first.sup.records["chat"].pid
    assert pid is not None
    return host, nxrd, pid


def causes(d: Daemon, workload: str) -> list[str]:
    return [e.cause for e in d.events.since(0, workload)]


def test_a_started_nxrd_adopts_through_its_host(tmp_path: Path) -> None:
    """The whole path: state file and shim record on disk, the leaf's processes from the
    host's cgroupfs, the supervisor holding the adopted process without starting one."""
    host, nxrd, pid = left_running(tmp_path)
    saved = json.loads((tmp_path / "state/state.json").read_text())["workloads"]["chat"]
    assert (saved["pid"], saved["state"]) == (pid, "ready")

    second = nxrd()
    second.start()
    again = second.sup.records["chat"]
    assert (again.pid, again.state.value) == (pid, "ready")
    assert host.proc_runtime is not None and host.proc_runtime.launches == []  # none started
    # the journal says how many it took over, and how long its start took (the fake
    # host's clock stands still)
    said = [c for c in causes(second, "nxrd") if not c.startswith("exclusive cores")]
    assert said == ["took over 1 running workload; started in 0 ms"]
    second.close()


def test_the_linux_host_holds_a_process_by_pidfd_and_finds_its_cgroup() -> None:
    host = LinuxHost()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        fd = host.hold(proc.pid)
        assert fd is not None and not host.gone(fd)
        with open(f"/proc/{proc.pid}/cgroup") as f:
            v2 = [line for line in f.read().splitlines() if line.startswith("0::")]
        if v2:  # a host with a cgroup2 line: the path below the mount
            assert host.cgroup_of(proc.pid) == host.mount + v2[0][3:]
        proc.kill()
        proc.wait()
        assert host.gone(fd)
        host.release(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert host.hold(proc.pid) is None  # reaped: no such process
    assert host.uid_of("root") == 0 and host.uid_of("no-such-user-nxr") is None
    assert host.uid_of("bad\0name") is None
    assert host.in_group(0, 0, 0) and host.euid() == os.geteuid()


def test_an_empty_profile_directory_starts_nxrd_waiting_for_a_profile(tmp_path: Path) -> None:
    """A fresh install has no profile: nxrd runs with none and says so (before, the unit's
    ConditionDirectoryNotEmpty skipped the start without a word); a reload picks one up."""
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    sock = str(tmp_path / "nxrd.sock")
    d = Daemon([str(profiles)], str(tmp_path / "state"), socket_path=sock, host=host)
    d.start()
    assert d.sup.records == {}
    said = [c for c in causes(d, "nxrd") if not c.startswith("exclusive cores")]
    assert said == [f"no profile in {profiles} yet: add one, then reload"]
    assert d.view.summary() == f"no profile in {profiles}: add one, then reload"
    (profiles / "chat.toml").write_text(PROFILE)
    d.reconf.reconfigure(None, False, "SIGHUP")
    assert list(d.sup.records) == ["chat"]
    assert d.view.summary().startswith("1 workloads: ")
    d.close()


def test_an_empty_profile_directory_does_not_stop_what_the_last_nxrd_left(tmp_path: Path) -> None:
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"workloads": {"chat": running(1, 2, "x")}}))
    try:
        Daemon([str(profiles)], str(state), socket_path=str(tmp_path / "s.sock"), host=host)
    except NxrError as e:
        assert str(e) == (
            f"no profile in {profiles}, but the last nxrd left chat running; put the profile "
            "back (without it nxrd would stop them)"
        )
    else:
        raise AssertionError("nxrd started without the profile of running workloads")


def test_the_state_files_are_private(tmp_path: Path) -> None:
    """state.json and applied.json hold profiles' env values (tokens): root's only."""
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    (tmp_path / "p.toml").write_text(PROFILE)
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    d = Daemon(
        [str(tmp_path / "p.toml")], str(state), socket_path=str(tmp_path / "s.sock"), host=host
    )
    d.start()
    d.step(1.0, stopping=False)
    d.reconf.reconfigure([("p.toml", PROFILE)], False, "test")  # writes applied.json
    for path, mode in (
        (state, 0o700),
        (state / "state.json", 0o600),
        (state / "ledger.json", 0o600),
        (state / "applied.json", 0o600),
    ):
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path
    d.close()


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_state_file_is_rebuilt_from_the_kernel_not_started_twice(
    tmp_path: Path, damage: str
) -> None:
    """A state file cut short (a disk full, a crash mid-write on a filesystem without
    rename's guarantee) or removed by hand: the workloads still run in their leaves, their
    shims' records say which process is theirs. Before, nxrd started each one again
    beside the one still running."""
    host, nxrd, pid = left_running(tmp_path)
    state_file = tmp_path / "state/state.json"
    if damage == "truncated":
        state_file.write_text(state_file.read_text()[:25])
    else:
        state_file.unlink()

    second = nxrd()
    second.start()
    again = second.sup.records["chat"]
    assert again.pid == pid and again.state.value == "starting"  # its readiness checked again
    assert host.proc_runtime is not None and host.proc_runtime.launches == []  # none started
    said = [c for c in causes(second, "nxrd") if not c.startswith("exclusive cores")]
    how = "unreadable" if damage == "truncated" else "missing"
    assert said[0] == (
        f"state file {state_file} {how}: found chat running from their shims' records and"
        " their leaves; taking them over"
    )
    second.close()


def test_a_frozen_leaf_is_adopted_frozen_by_whoever_froze_it() -> None:
    """The kernel says whether it is frozen, the state file by whom; a freeze the state
    file missed (nxrd died first) is an operator's to lift, a record without the kernel's
    freeze is not believed."""
    saved = {"embed": running(200, 199, "batch/embed", launch="k2")}
    frozen = {"embed": Seen({"pid": 200, "shim_pid": 199}, (200,), frozen=True)}
    thawed = {"embed": Seen({"pid": 200, "shim_pid": 199}, (200,), frozen=False)}
    adopt = Adopt("embed", 200, 199, 5.0, "ready", restart=False)
    assert decide(saved, PLANNED, frozen) == [replace(adopt, frozen_by="operator")]
    saved["embed"]["frozen_by"] = "controller"
    assert decide(saved, PLANNED, frozen) == [replace(adopt, frozen_by="controller")]
    assert decide(saved, PLANNED, thawed) == [adopt]


def test_an_operators_freeze_survives_nxrd_and_thaw_still_works(tmp_path: Path) -> None:
    """Before, the new nxrd believed it thawed: `thaw` did nothing and it stayed frozen."""
    host, nxrd, pid = left_running(tmp_path, before=lambda d: d.sup.freeze("chat", 0.5))
    second = nxrd()
    second.start()
    rec = second.sup.records["chat"]
    assert (rec.pid, rec.state.value, rec.frozen, rec.frozen_by) == (pid, "ready", True, "operator")
    assert [e.cause for e in second.events.since(0, "chat")][-1] == (
        "still frozen from before nxrd restarted, until an operator's thaw lifts it"
    )
    second.controller.tick(2.0, lambda names: {})
    assert host.fs.read(rec.plan.cgroup, "cgroup.freeze") == "1"  # no tick lifts it
    second.sup.thaw("chat", 2.5)
    assert host.fs.read(rec.plan.cgroup, "cgroup.freeze") == "0" and not rec.frozen
    second.close()


CONTROLLED = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
slo = {p99 = "200ms", window = "5s", source = {push = true}}

[workloads.embed]
command = ["embed"]
class = "batch"
"""


def test_the_controllers_freeze_is_lifted_by_the_next_controller(tmp_path: Path) -> None:
    """nxrd killed while its controller held batch frozen: the next one knows it is frozen
    and, at static, thaws it at its first tick; an operator's freeze beside it stays."""

    def froze(d: Daemon) -> None:
        d.sup.freeze("embed", 0.5, cause="controller: freeze-batch (test)", by="controller")

    host, nxrd, _ = left_running(tmp_path, CONTROLLED, froze)
    second = nxrd()
    second.start()
    rec = second.sup.records["embed"]
    assert (rec.frozen, rec.frozen_by) == (True, "controller")
    second.controller.tick(2.0, lambda names: {})
    assert not rec.frozen and host.fs.read(rec.plan.cgroup, "cgroup.freeze") == "0"
    assert second.events.since(0, "embed")[-1].cause.startswith("controller: static")
    second.close()
