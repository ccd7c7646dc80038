"""A workload's current CPUs are published in NXR_CPUS_FILE and follow every write of its
cpuset, whoever makes it: the thread-count variables cannot (they are read at start)."""

from __future__ import annotations

from pathlib import Path

from nxrd.daemon.core import Daemon
from nxrd.kernel.cgroupfs import LinuxCgroupFS
from nxrd.kernel.fake_host import FakeHost
from nxrd.kernel.linux_runtime import LinuxRuntime
from nxrd.model.topology import load_topology
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES

PROFILE = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 2

[workloads.embed]
command = ["embed"]
class = "batch"
"""


def test_the_file_follows_the_planned_cpus_and_every_later_cpuset_write(tmp_path: Path) -> None:
    host = FakeHost(load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    (tmp_path / "p.toml").write_text(PROFILE)
    sock = str(tmp_path / "nxrd.sock")
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "s"), socket_path=sock, host=host)
    d.start()
    rt = host.proc_runtime
    assert rt is not None and rt.cpus_dir == tmp_path / "cpus"
    chat = d.plan.workload("chat")
    n = len(chat.values.cpus)
    assert rt.published == {
        "chat": f"{n} {chat.cpus}\n",
        "embed": f"{len(d.plan.workload('embed').values.cpus)} {d.plan.workload('embed').cpus}\n",
    }
    d.fs.write("batch/embed", "cpuset.cpus", "4-5")  # as the controller lends or shares
    assert rt.published["embed"] == "2 4-5\n"
    d.fs.write("batch", "cpuset.cpus", "4-9")  # a class parent: no workload's file
    assert rt.published["embed"] == "2 4-5\n"
    assert d.ledger.of("batch/embed")["cpuset.cpus"].value == "4-5"  # still recorded
    d.close()


def test_the_linux_runtime_writes_the_file_and_tells_the_workload_where(tmp_path: Path) -> None:
    rt = LinuxRuntime(LinuxCgroupFS(tmp_path / "cg"), tmp_path / "state")
    rt.cpus_dir = tmp_path / "run" / "cpus"
    spec = parse_profile('[workloads.chat]\ncommand = ["x"]\n').workloads["chat"]
    assert rt.base_env("chat", spec)["NXR_CPUS_FILE"] == str(rt.cpus_dir / "chat")
    rt.publish_cpus("chat", "3 0-2\n")
    assert (rt.cpus_dir / "chat").read_text() == "3 0-2\n"
    rt.cpus_dir = Path("/proc/nxr-cannot-write")  # best effort: no error on a cgroup write
    rt.publish_cpus("chat", "1 0\n")
