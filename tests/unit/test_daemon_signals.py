"""What nxrd reads of its workloads' leaves for the controller and for status: usage every
tick, pressure only when the kernel has new averages, and the per-second CPU sample taken
from the tick where the tick has just read it. Real files in a directory stand in for the
leaves, read through nxrd's own kept-open descriptors."""

from __future__ import annotations

import io
import subprocess
import types
from pathlib import Path

import pytest

from nxrd import service
from nxrd.kernel.counters import KeptOpen
from nxrd.service import Daemon


def rec(name: str, cgroup: str, pid: int | None = 100) -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, pid=pid, plan=types.SimpleNamespace(cgroup=cgroup))


def leaf(root: Path, cgroup: str, usage: int = 0, cpu_some: float = 0.0) -> None:
    d = root / cgroup
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.stat").write_text(f"usage_usec {usage}\nnr_periods 0\nnr_throttled 0\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    for res in ("cpu", "memory", "io"):
        some = cpu_some if res == "cpu" else 0.0
        (d / f"{res}.pressure").write_text(
            f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=1\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    d = Daemon.__new__(Daemon)
    d.root = tmp_path
    d.counters = KeptOpen()
    d.tick_cpu, d.tick_pressure, d.samples, d.main_pids = {}, {}, {}, {}
    records = {"chat": rec("chat", "lc/chat"), "idle": rec("idle", "batch/idle")}
    d.sup = types.SimpleNamespace(records=records)  # type: ignore[assignment]
    leaf(tmp_path, "lc/chat", cpu_some=10.0)
    leaf(tmp_path, "batch/idle")
    return d


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr(service.time, "monotonic", lambda: self.now)  # type: ignore[attr-defined]


def test_pressure_is_read_again_only_when_the_kernel_has_new_averages(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    assert daemon._tick_signals(["chat"])["chat"]["cpu_some"] == 10.0
    leaf(tmp_path, "lc/chat", usage=250_000, cpu_some=50.0)
    clock.now += 0.5
    got = daemon._tick_signals(["chat"])["chat"]
    assert got["cpu_some"] == 10.0  # the kernel's avg10 changes every 2 s: not re-read
    assert got["cpu_percent"] == 50.0  # usage is, every tick: 0.25 s of CPU in 0.5 s
    clock.now += 1.5
    assert daemon._tick_signals(["chat"])["chat"]["cpu_some"] == 50.0
    leaf(tmp_path, "lc/chat", cpu_some=70.0)
    daemon.sup.records["chat"].pid = 200  # restarted: a new process, its own figures
    clock.now += 0.5
    assert daemon._tick_signals(["chat"])["chat"]["cpu_some"] == 70.0
    daemon.sup.records["chat"].pid = None  # stopped: nothing, and nothing kept
    assert daemon._tick_signals(["chat"]) == {}
    assert daemon.tick_pressure == {} and daemon.tick_cpu == {}


def test_the_per_second_sample_takes_what_the_tick_just_read(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    read: list[str] = []
    real = daemon.counters.read

    def counted(path: str) -> str | None:
        read.append(path)
        return real(path)

    daemon.counters.read = counted  # type: ignore[method-assign]
    daemon._tick_signals(["chat"])
    read.clear()
    daemon._sample(clock.now)
    # chat's cpu.stat came with the tick; idle is not watched by the controller: read
    assert read == [f"{tmp_path}/batch/idle/cpu.stat"]
    assert daemon.samples["chat"] == (daemon.tick_cpu["chat"], None)
    clock.now += 1.0  # no tick since (the controller is off): read it
    read.clear()
    daemon._sample(clock.now)
    assert f"{tmp_path}/lc/chat/cpu.stat" in read
    assert daemon.samples["chat"][1] is daemon.tick_cpu["chat"]


def test_a_reporters_cgroup_maps_to_the_workload_whose_leaf_holds_it(
    daemon: Daemon,
) -> None:
    assert daemon._owner("lc/chat") == "chat"
    assert daemon._owner("lc/chat/worker") == "chat"  # a cgroup the workload made below
    assert daemon._owner("lc/chatter") is None
    # an apply replaced chat with a workload elsewhere: its old leaf reports for nobody
    daemon.sup.records = {"chat": rec("chat", "lc/chat2")}  # type: ignore[dict-item]
    assert daemon._owner("lc/chat") is None
    assert daemon._owner("lc/chat2") == "chat"


def test_a_workloads_main_process_is_known_by_its_pid_while_it_lives(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    main, worker, other = (p.pid for p in procs)
    daemon.topology = types.SimpleNamespace(cgroup=types.SimpleNamespace(mount="/sys/fs/cgroup"))  # type: ignore[assignment]
    daemon.root = Path("/sys/fs/cgroup/nxr")
    daemon.sup.records["chat"].pid = main
    where = {main: "/nxr/lc/chat", worker: "/nxr/lc/chat", other: "/elsewhere"}
    opened: list[int] = []

    def fake_open(path: str) -> io.StringIO:
        pid = int(path.split("/")[2])
        opened.append(pid)
        return io.StringIO(f"0::{where[pid]}\n")

    monkeypatch.setattr(service, "open", fake_open, raising=False)
    try:
        assert [daemon._workload_of_pid(p) for p in (main, main, worker, worker, other)] == [
            *("chat", "chat", "chat", "chat", None)
        ]
        assert opened == [main, worker, worker, other]  # the main one's cgroup read once
        # it exits, and before the supervisor hears of it (rec.pid unchanged) its PID goes
        # to a process outside every workload: the pidfd says the one found is gone
        procs[0].kill()
        procs[0].wait()
        where[main] = "/elsewhere"
        assert daemon._workload_of_pid(main) is None
        assert daemon.main_pids == {}
    finally:
        for p in procs:
            p.kill()
            p.wait()
