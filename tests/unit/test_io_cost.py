"""I/O weights that act: io.cost turned on where neither it nor BFQ would enforce a
profile's io_weight, and off again; BFQ's own weight file written beside io.weight."""

from __future__ import annotations

from pathlib import Path

from nxrd.daemon.io_cost import IoCost, give_back
from nxrd.daemon.isolation import Isolation
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.block import Disk, Disks
from nxrd.kernel.cgroupfs import FakeCgroupFS
from nxrd.kernel.fake_host import FakeDisks, FakeHostCpus
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES

WEIGHTED = '[workloads.a]\ncommand = ["a"]\nio_weight = 1000\n[workloads.b]\ncommand = ["b"]\nio_weight = 100\n'
PLAIN = '[workloads.a]\ncommand = ["a"]\n'


def test_io_cost_is_turned_on_only_where_weights_would_not_act(tmp_path: Path) -> None:
    disks = FakeDisks(
        [
            Disk("vda", "254:0", "mq-deadline", False),
            Disk("sda", "8:0", "bfq", False),  # BFQ enforces io.bfq.weight itself
            Disk("nvme0n1", "259:0", "none", True),  # io.cost already on
        ]
    )
    said: list[str] = []
    io = IoCost(disks, tmp_path, said.append)
    io.apply(parse_profile(PLAIN))
    assert [d.iocost for d in disks.list()] == [False, False, True] and said == []
    io.apply(parse_profile(WEIGHTED))
    assert [d.iocost for d in disks.list()] == [True, False, True]
    assert said == ["io.cost turned on for vda (254:0, mq-deadline): io_weight acts there now"]
    assert (tmp_path / "io.json").read_text() == '["254:0"]'
    io.restore()  # off where nxr turned it on; left on where it was on before
    assert [d.iocost for d in disks.list()] == [False, False, True]
    assert not (tmp_path / "io.json").exists()


def test_a_plan_losing_its_exclusive_cores_keeps_the_io_weights_acting(tmp_path: Path) -> None:
    """Giving the cores back (a reload with no exclusive workload left) is not giving
    io.cost back: the profile still sets io_weight."""
    disks = FakeDisks()
    iso = Isolation(FakeHostCpus(), tmp_path, None, lambda s: None, disks)
    topo = load_topology(TOPOLOGIES / "vm-2cpu.json")
    lc = '[workloads.chat]\ncommand = ["c"]\nclass = "latency-critical"\ncpus = 1\n'
    with_lc = parse_profile(WEIGHTED + lc)
    iso.apply(make_plan(with_lc, topo), with_lc)
    assert disks.list()[0].iocost
    without = parse_profile(WEIGHTED)
    iso.apply(make_plan(without, topo), without)
    assert disks.list()[0].iocost
    iso.restore()  # nxrd exits: both given back
    assert not disks.list()[0].iocost


def test_a_kernel_without_io_cost_is_a_warning_naming_the_disk(tmp_path: Path) -> None:
    said: list[str] = []
    IoCost(FakeDisks([Disk("vda", "254:0", "mq-deadline", None)]), tmp_path, said.append).apply(
        parse_profile(WEIGHTED)
    )
    assert said == [
        "warning: io_weight of a, b has no effect on vda: no io.cost in this kernel and no "
        "BFQ scheduler there"
    ]


def test_disks_are_read_where_the_kernel_keeps_them(tmp_path: Path) -> None:
    sys, cgroup = tmp_path / "sys", tmp_path / "cgroup"
    for name, devno, size, sched in (
        ("vda", "254:0", "2048", "[mq-deadline] kyber none"),
        ("sda", "8:0", "4096", "mq-deadline [bfq] none"),
        ("loop0", "7:0", "0", "[none]"),  # not attached: no disk
    ):
        d = sys / "block" / name
        (d / "queue").mkdir(parents=True)
        (d / "dev").write_text(devno + "\n")
        (d / "size").write_text(size + "\n")
        (d / "queue/scheduler").write_text(sched + "\n")
    cgroup.mkdir()
    (cgroup / "io.cost.qos").write_text("254:0 enable=0 ctrl=auto rpct=0.00 rlat=250000\n")
    disks = Disks(sys, cgroup)
    assert disks.list() == [
        Disk("sda", "8:0", "bfq", False),
        Disk("vda", "254:0", "mq-deadline", False),
    ]
    disks.set_iocost("254:0", True)
    assert (cgroup / "io.cost.qos").read_text() == "254:0 enable=1 ctrl=auto"
    (cgroup / "io.cost.qos").unlink()
    assert {d.iocost for d in Disks(sys, cgroup).list()} == {None}  # no io.cost here
    (tmp_path / "io.json").write_text('["254:0"]')
    assert give_back(Disks(sys, cgroup), tmp_path / "io.json") != []  # said, not raised


def test_bfq_gets_the_same_weight_where_it_runs() -> None:
    plan = make_plan(parse_profile(WEIGHTED), load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    for wl in plan.workloads:  # as the kernel shows it once BFQ is loaded
        fs.dirs[wl.cgroup]["io.bfq.weight"] = "default 100"
    apply_plan(plan, fs)
    assert fs.read("interactive/a", "io.bfq.weight") == "default 1000"
    assert fs.read("interactive/b", "io.bfq.weight") == "default 100"
    assert ("interactive/b", "io.bfq.weight", "default 100") not in fs.writes  # unchanged
