"""What nxrd reads of its workloads' leaves for the controller and for status: usage every
tick, pressure only when the kernel has new averages, and the per-second CPU sample taken
from the tick where the tick has just read it. Real files in a directory stand in for the
leaves, read through nxrd's own kept-open descriptors."""

from __future__ import annotations

import socket
import types
from pathlib import Path

import pytest

from nxrd.daemon.pids import PidIndex, _owner
from nxrd.daemon.readings import Readings
from nxrd.kernel.counters import KeptOpen
from nxrd.kernel.fake_host import FakeHost
from nxrd.kernel.listen import ListenQueues
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES


def rec(
    name: str, cgroup: str, pid: int | None = 100, port: int | None = None
) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        name=name,
        pid=pid,
        plan=types.SimpleNamespace(cgroup=cgroup),
        spec=types.SimpleNamespace(port=port),
    )


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


class Daemon:
    """The parts of nxrd that read leaves and map PIDs, over real files and a fake host."""

    def __init__(self, root: Path) -> None:
        self.records = {"chat": rec("chat", "lc/chat"), "idle": rec("idle", "batch/idle")}
        self.readings = Readings(KeptOpen(), root)
        self.host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
        self.host.root = root
        self.pids = PidIndex(self.host, root)


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    leaf(tmp_path, "lc/chat", cpu_some=10.0)
    leaf(tmp_path, "batch/idle")
    return Daemon(tmp_path)


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0


def test_pressure_is_read_again_only_when_the_kernel_has_new_averages(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    assert daemon.readings.tick(["chat"], daemon.records, clock.now)["chat"]["cpu_some"] == 10.0
    leaf(tmp_path, "lc/chat", usage=250_000, cpu_some=50.0)
    clock.now += 0.5
    got = daemon.readings.tick(["chat"], daemon.records, clock.now)["chat"]
    assert got["cpu_some"] == 10.0  # the kernel's avg10 changes every 2 s: not re-read
    assert got["cpu_percent"] == 50.0  # usage is, every tick: 0.25 s of CPU in 0.5 s
    clock.now += 1.5
    assert daemon.readings.tick(["chat"], daemon.records, clock.now)["chat"]["cpu_some"] == 50.0
    leaf(tmp_path, "lc/chat", cpu_some=70.0)
    daemon.records["chat"].pid = 200  # restarted: a new process, its own figures
    clock.now += 0.5
    assert daemon.readings.tick(["chat"], daemon.records, clock.now)["chat"]["cpu_some"] == 70.0
    daemon.records["chat"].pid = None  # stopped: nothing, and nothing kept
    assert daemon.readings.tick(["chat"], daemon.records, clock.now) == {}
    assert daemon.readings.tick_pressure == {} and daemon.readings.tick_cpu == {}


def test_the_per_second_sample_takes_what_the_tick_just_read(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    read: list[str] = []
    real = daemon.readings.counters.read

    def counted(path: str) -> str | None:
        read.append(path)
        return real(path)

    daemon.readings.counters.read = counted  # type: ignore[method-assign]
    daemon.readings.tick(["chat"], daemon.records, clock.now)
    read.clear()
    daemon.readings.sample(daemon.records, clock.now)
    # chat's cpu.stat came with the tick; idle is not watched by the controller: read
    assert read == [f"{tmp_path}/batch/idle/cpu.stat"]
    assert daemon.readings.samples["chat"] == (daemon.readings.tick_cpu["chat"], None)
    clock.now += 1.0  # no tick since (the controller is off): read it
    read.clear()
    daemon.readings.sample(daemon.records, clock.now)
    assert f"{tmp_path}/lc/chat/cpu.stat" in read
    assert daemon.readings.samples["chat"][1] is daemon.readings.tick_cpu["chat"]


def test_a_reporters_cgroup_maps_to_the_workload_whose_leaf_holds_it(
    daemon: Daemon,
) -> None:
    assert _owner("lc/chat", daemon.records) == "chat"
    assert _owner("lc/chat/worker", daemon.records) == "chat"  # a cgroup the workload made below
    assert _owner("lc/chatter", daemon.records) is None
    # an apply replaced chat with a workload elsewhere: its old leaf reports for nobody
    daemon.records = {"chat": rec("chat", "lc/chat2")}  # type: ignore[dict-item]
    assert _owner("lc/chat", daemon.records) is None
    assert _owner("lc/chat2", daemon.records) == "chat"


def test_a_workloads_main_process_is_known_by_its_pid_while_it_lives(daemon: Daemon) -> None:
    host, root = daemon.host, daemon.host.root
    main, worker, other = 501, 502, 503
    daemon.records["chat"].pid = main
    host.spawned(main, "lc/chat")
    host.spawned(worker, "lc/chat")
    host.pid_cgroups[other] = "/sys/fs/cgroup/elsewhere"
    of = daemon.pids.workload_of
    assert [of(p, daemon.records) for p in (main, main, worker, worker, other)] == [
        *("chat", "chat", "chat", "chat", None)
    ]
    assert host.lookups == [main, worker, worker, other]  # the main one's cgroup read once
    # it exits, and before the supervisor hears of it (rec.pid unchanged) its PID goes
    # to a process outside every workload: the pidfd says the one found is gone
    host.exit(main)
    assert of(main, daemon.records) is None
    assert daemon.pids.main == {}
    assert host.open_pidfds == {}  # every pidfd taken was closed
    assert host.cgroup_of(worker) == f"{root}/lc/chat"


def test_connections_waiting_at_a_workloads_port_are_its_listen_queue(tmp_path: Path) -> None:
    """Read from the kernel (sock_diag): a server that has not accepted three connections
    has three waiting; a workload without a port, or whose port nothing listens on, has no
    such signal."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    leaf(tmp_path, "lc/chat")
    leaf(tmp_path, "batch/idle")
    leaf(tmp_path, "lc/gone")
    records = {
        "chat": rec("chat", "lc/chat", port=port),
        "idle": rec("idle", "batch/idle"),
        "gone": rec("gone", "lc/gone", port=1),  # nothing listens on port 1
    }
    readings = Readings(KeptOpen(), tmp_path, ListenQueues())
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        got = readings.tick(["chat", "idle", "gone"], records, 100.0)
        assert got["chat"]["listen_queue"] == 3.0
        assert "listen_queue" not in got["idle"] and "listen_queue" not in got["gone"]
        accepted, _ = server.accept()
        accepted.close()
        assert readings.tick(["chat"], records, 100.5)["chat"]["listen_queue"] == 2.0
    finally:
        readings.close()
        for c in clients:
            c.close()
        server.close()
