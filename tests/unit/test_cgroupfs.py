"""Applying a plan through the kernel interface: order, controllers, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.errors import KernelError
from nxrd.kernel.apply import apply_plan, controllers_needed, read_back
from nxrd.kernel.cgroupfs import FakeCgroupFS, LinuxCgroupFS
from nxrd.model.plan import DAEMON_LEAF
from nxrd.model.topology import load_topology
from nxrd.plan import Plan, Topology, make_plan
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES

PROFILE = (
    '[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\ncpus=4\nmemory_min="1G"\n'
    '[workloads.embed]\ncommand=["x"]\nclass="batch"\ncpu_max="200%"\nio_weight=50\n'
    '[workloads.idx]\ncommand=["x"]\nclass="background"\n'
)


@pytest.fixture
def the_plan(smt16: Topology) -> Plan:
    return make_plan(parse_profile(PROFILE), smt16)


def test_apply_writes_every_value(the_plan: Plan) -> None:
    fs = FakeCgroupFS()
    apply_plan(the_plan, fs)
    got = read_back(the_plan, fs)
    assert got["latency-critical/chat"] == the_plan.workload("chat").files
    assert got["batch/embed"]["io.weight"] == "default 50"
    assert fs.subtree_control("") == ["cpuset", "cpu", "io", "memory", "pids"]
    assert fs.subtree_control("batch") == ["cpuset", "cpu", "io", "memory", "pids"]


def test_reapplying_touches_only_what_changed(the_plan: Plan, smt16: Topology) -> None:
    fs = FakeCgroupFS()
    apply_plan(the_plan, fs)
    fs.writes.clear()
    apply_plan(the_plan, fs)
    assert fs.writes == []  # nothing changed, nothing written
    changed = make_plan(parse_profile(PROFILE.replace('cpu_max="200%"', 'cpu_max="300%"')), smt16)
    apply_plan(changed, fs)
    assert fs.writes == [("batch/embed", "cpu.max", "300000 100000")]


def test_parents_are_written_before_their_children(the_plan: Plan) -> None:
    fs = FakeCgroupFS()
    apply_plan(the_plan, fs)
    order = [rel for rel, f, _ in fs.writes if f == "memory.min"]
    assert order.index("") < order.index("latency-critical") < order.index("latency-critical/chat")


def test_missing_controllers_are_named(the_plan: Plan) -> None:
    fs = FakeCgroupFS(controllers=("cpu", "memory"))
    with pytest.raises(KernelError, match=r"controllers cpuset, io, pids are not available"):
        apply_plan(the_plan, fs)
    assert list(fs.dirs) == [""]


def test_a_failing_write_rolls_everything_back(the_plan: Plan) -> None:
    fs = FakeCgroupFS()
    fs.write("", "cgroup.subtree_control", "+cpu +memory +cpuset +io +pids")
    fs.mkdir("batch")  # exists beforehand: must survive, with its old values
    fs.fail_on.add(("background/idx", "memory.max"))
    with pytest.raises(KernelError, match=r"memory\.max"):
        apply_plan(the_plan, fs)
    assert sorted(fs.dirs) == ["", "batch"]
    assert fs.read("", "memory.min") == "0"
    assert fs.read("batch", "cpu.weight") == "100"
    assert fs.subtree_control("batch") == []  # controllers it enabled are disabled again


def test_rollback_disables_the_controllers_it_enabled(the_plan: Plan) -> None:
    fs = FakeCgroupFS()
    fs.fail_on.add(("background/idx", "pids.max"))
    with pytest.raises(KernelError):
        apply_plan(the_plan, fs)
    assert list(fs.dirs) == [""] and fs.subtree_control("") == []


def test_the_fake_refuses_to_disable_a_controller_a_child_passes_on() -> None:
    fs = FakeCgroupFS()
    fs.enable("", ["cpu", "memory"])
    fs.mkdir("batch")
    fs.enable("batch", ["cpu"])
    with pytest.raises(KernelError, match="cannot disable cpu in fake:/: Device or resource busy"):
        fs.write("", "cgroup.subtree_control", "-memory -cpu")
    assert fs.subtree_control("") == ["cpu", "memory"]  # nothing of the write took
    assert ("", "cgroup.subtree_control", "-memory -cpu") not in fs.writes
    fs.write("", "cgroup.subtree_control", "-memory")
    assert fs.subtree_control("") == ["cpu"]


def test_a_plan_beyond_the_reach_of_nxrds_cgroup_is_refused_before_any_write(
    the_plan: Plan,
) -> None:
    # planned within reach at start, and the reach shrank since (a reload, a restart)
    fs = FakeCgroupFS()
    fs.mkdir(DAEMON_LEAF)
    fs.dirs[""]["cpuset.cpus.effective"] = "0-3,16-19"  # a parent allows 8 of 32
    with pytest.raises(KernelError) as info:
        apply_plan(the_plan, fs)
    assert str(info.value) == (
        "the plan uses CPUs 4-15,20-31, but fake:/ may use only 0-3,16-19 (its "
        "cpuset.cpus.effective: a parent cgroup's limit, or CPUs gone offline, since nxrd "
        "read it at start): restart nxrd to plan within it"
    )
    assert fs.writes == [] and list(fs.dirs) == ["", DAEMON_LEAF]
    fs.dirs[""]["cpuset.cpus.effective"] = "0-31"
    fs.dirs[""]["cpuset.mems.effective"] = "1"
    mems = sorted({w.files["cpuset.mems"] for w in the_plan.workloads})
    with pytest.raises(KernelError, match=r"uses memory nodes 0, but fake:/ may use only 1 "):
        apply_plan(the_plan, fs)
    assert mems == ["0"] and fs.writes == []
    fs.dirs[""]["cpuset.mems.effective"] = "0-1"
    apply_plan(the_plan, fs)


def test_controllers_needed(the_plan: Plan) -> None:
    assert controllers_needed(the_plan) == ["cpuset", "cpu", "io", "memory", "pids"]


def test_linux_cgroupfs_never_leaves_its_subtree(tmp_path: Path) -> None:
    fs = LinuxCgroupFS(tmp_path)
    for bad in ["../etc", "/sys/fs/cgroup", "a/../../b"]:
        with pytest.raises(KernelError, match="leaves nxrd's subtree"):
            fs.read(bad, "cpu.max")


def test_linux_cgroupfs_errors_are_sentences(tmp_path: Path) -> None:
    fs = LinuxCgroupFS(tmp_path)
    fs.mkdir("leaf")
    with pytest.raises(KernelError) as info:
        fs.write("leaf", "cpu.max", "max")
    assert str(info.value) == (
        f"cannot write cpu.max = 'max' in {tmp_path}/leaf: No such file or directory "
        "(is the cpu controller enabled for it?)"
    )
    (tmp_path / "leaf" / "cpu.weight").write_text("100\n")
    fs.write("leaf", "cpu.weight", "300")
    assert fs.read("leaf", "cpu.weight") == "300"
    with pytest.raises(KernelError, match="cannot create cgroup"):
        fs.mkdir("leaf")


def test_flat_keyed_files_and_removal_retries(tmp_path: Path) -> None:
    fs = LinuxCgroupFS(tmp_path)
    fs.mkdir("leaf")
    (tmp_path / "leaf" / "cpu.stat").write_text("usage_usec 42\nnr_throttled 3\n")
    assert fs.read_keyed("leaf", "cpu.stat") == {"usage_usec": "42", "nr_throttled": "3"}
    (tmp_path / "leaf" / "busy").touch()  # a directory that cannot be removed yet
    with pytest.raises(KernelError, match="cannot remove cgroup"):
        fs.rmdir_when_empty("leaf", wait=0.1)
    (tmp_path / "leaf" / "busy").unlink()
    (tmp_path / "leaf" / "cpu.stat").unlink()
    fs.rmdir_when_empty("leaf")
    assert not fs.exists("leaf")


def test_nxrd_itself_keeps_off_the_cores_workloads_hold_exclusively(
    the_plan: Plan, smt16: Topology
) -> None:
    fs = FakeCgroupFS()
    fs.mkdir(DAEMON_LEAF)  # nxrd moved itself there before applying (kernel.subtree)
    apply_plan(the_plan, fs)
    assert fs.read(DAEMON_LEAF, "cpuset.cpus") == the_plan.reserved_cpus == "0,16"
    # a host too small to reserve CPUs: the shared pool, not chat's core
    small = parse_profile(
        '[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\ncpus=1\n'
        '[workloads.embed]\ncommand=["x"]\nclass="batch"\n'
    )
    plan = make_plan(small, load_topology(TOPOLOGIES / "vm-2cpu.json"))
    fs = FakeCgroupFS()
    fs.mkdir(DAEMON_LEAF)
    apply_plan(plan, fs)
    assert plan.workload("chat").cpus == "0"
    assert fs.read(DAEMON_LEAF, "cpuset.cpus") == plan.shared_cpus == "1"
