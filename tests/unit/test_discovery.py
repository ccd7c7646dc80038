"""Discovery reads sysfs/procfs trees and NVML into plain topology data."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from nxrd.kernel import gpu
from nxrd.kernel.discovery import cgroup_info, discover
from tests.unit.fake_nvml import FakeGpu, FakeMig, FakeNVML

V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID_MOUNTINFO = (
    "25 23 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "26 23 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "27 23 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_host(root: Path, mountinfo: str = V2_MOUNTINFO, own: str = "/nxr") -> Path:
    """2 nodes x 2 cores x 2 threads; siblings are i and i+4."""
    cpu = "sys/devices/system/cpu"
    write(root, f"{cpu}/online", "0-7\n")
    for i in range(8):
        core = i % 4
        write(root, f"{cpu}/cpu{i}/topology/core_id", f"{core % 2}\n")
        write(root, f"{cpu}/cpu{i}/topology/physical_package_id", f"{core // 2}\n")
    node = "sys/devices/system/node"
    write(root, f"{node}/online", "0-1\n")
    write(root, f"{node}/node0/cpulist", "0-1,4-5\n")
    write(root, f"{node}/node1/cpulist", "2-3,6-7\n")
    write(root, f"{node}/node0/meminfo", "Node 0 MemTotal:       8000000 kB\n")
    write(root, f"{node}/node1/meminfo", "Node 1 MemTotal:       8000000 kB\n")
    write(root, "proc/meminfo", "MemTotal:       16000000 kB\nMemFree: 1 kB\n")
    write(root, "proc/self/mountinfo", mountinfo)
    write(root, "proc/self/cgroup", f"0::{own}\n")
    write(root, f"sys/fs/cgroup{own}/cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root, f"sys/fs/cgroup{own}/cgroup.subtree_control", "cpu memory\n")
    write(root, f"sys/fs/cgroup{own}/cgroup.procs", "")
    return root


def test_cpus_cores_and_nodes(tmp_path: Path) -> None:
    topo = discover(fake_host(tmp_path), gpus=False)
    assert [c.id for c in topo.cpus] == list(range(8))
    assert topo.cores() == [(0, 4), (1, 5), (2, 6), (3, 7)]
    assert {c.id: c.node for c in topo.cpus} == {0: 0, 1: 0, 4: 0, 5: 0, 2: 1, 3: 1, 6: 1, 7: 1}
    assert [n.memory for n in topo.nodes] == [8000000 * 1024] * 2
    assert topo.memory == 16000000 * 1024


def test_no_topology_files_means_one_core_per_cpu(tmp_path: Path) -> None:
    write(tmp_path, "sys/devices/system/cpu/online", "0-1\n")
    write(tmp_path, "proc/meminfo", "MemTotal: 1000 kB\n")
    topo = discover(tmp_path, gpus=False)
    assert topo.cores() == [(0,), (1,)]
    assert topo.nodes[0].memory == 1000 * 1024


def test_cgroup_v2_host(tmp_path: Path) -> None:
    info = cgroup_info(fake_host(tmp_path))
    assert info.mount == "/sys/fs/cgroup" and info.own_path == "/nxr"
    assert info.controllers == ["cpuset", "cpu", "io", "memory", "pids"]
    assert info.v1_controllers == []
    assert info.subtree_control == ["cpu", "memory"] and info.writable


def test_the_reach_of_nxrds_cgroup_is_read_from_it_or_its_nearest_ancestor(
    tmp_path: Path,
) -> None:
    root = fake_host(tmp_path, own="/system.slice/nxrd.service")
    write(root, "sys/fs/cgroup/cpuset.cpus.effective", "0-7\n")
    write(root, "sys/fs/cgroup/cpuset.mems.effective", "0-1\n")
    write(root, "sys/fs/cgroup/system.slice/cpuset.cpus.effective", "0-3\n")  # AllowedCPUs=
    write(root, "sys/fs/cgroup/system.slice/cpuset.mems.effective", "0\n")
    # the service's cgroup has no cpuset files (cpuset not enabled for it): the slice's
    topo = discover(root, gpus=False)
    assert (topo.cgroup.cpus, topo.cgroup.mems) == ("0-3", "0")
    # a cgroup that does not exist yet (--cgroup-root, or standalone /nxr) runs where its
    # nearest ancestor does
    assert discover(root, gpus=False, subtree="/sys/fs/cgroup/nxr").cgroup.cpus == "0-7"
    assert discover(root, gpus=False, subtree="/elsewhere/nxr").cgroup.cpus == ""  # no cgroup
    own = "sys/fs/cgroup/system.slice/nxrd.service"
    write(root, f"{own}/cpuset.cpus.effective", "2-3\n")
    write(root, f"{own}/cpuset.mems.effective", "0\n")
    assert discover(root, gpus=False).cgroup.cpus == "2-3"
    # the whole host is still what was found: the planner narrows it (Topology.within_reach)
    assert [c.id for c in topo.cpus] == list(range(8))


def test_without_cpuset_files_the_reach_is_unknown(tmp_path: Path) -> None:
    topo = discover(fake_host(tmp_path), gpus=False)
    assert (topo.cgroup.cpus, topo.cgroup.mems) == ("", "")


def test_hybrid_host_reports_v1_controllers(tmp_path: Path) -> None:
    info = cgroup_info(fake_host(tmp_path, HYBRID_MOUNTINFO, own="/"))
    assert info.mount == "/sys/fs/cgroup/unified"
    assert info.v1_controllers == ["cpu", "memory"]


def test_no_driver_means_no_gpus_and_a_reason(tmp_path: Path) -> None:
    topo = discover(fake_host(tmp_path))  # this machine has no NVIDIA driver
    assert topo.gpus == [] and topo.gpu_note


def test_gpus_from_nvml_with_numa_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    write(tmp_path, "sys/bus/pci/devices/0000:41:00.0/numa_node", "0\n")
    write(tmp_path, "sys/bus/pci/devices/0000:41:00.0/local_cpulist", "0-15,32-47\n")
    write(tmp_path, "sys/bus/pci/devices/0000:c1:00.0/numa_node", "-1\n")
    gpus, note = gpu.discover_gpus(tmp_path)
    assert note is None and nvml.shutdown
    assert [g.local_cpus for g in gpus] == ["0-15,32-47", None]
    assert [(g.index, g.uuid, g.name, g.memory, g.node) for g in gpus] == [
        (0, "GPU-0", "NVIDIA L4", 24 << 30, 0),
        (1, "GPU-1", "NVIDIA L4", 24 << 30, None),  # -1: the platform does not say
    ]


def test_nvml_init_failure_is_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(fail_init=True))
    gpus, note = gpu.discover_gpus(tmp_path)
    assert gpus == [] and note is not None and "Driver Not Loaded" in note


def four_gpu_host(root: Path) -> FakeNVML:
    """Two sockets, a GPU of each compute mode, MIG on GPU 2, an old driver on GPU 3."""
    for bus, node, cpus in (("41", 0, "0-15"), ("42", 0, "0-15"), ("c1", 1, "16-31")):
        write(root, f"sys/bus/pci/devices/0000:{bus}:00.0/numa_node", f"{node}\n")
        write(root, f"sys/bus/pci/devices/0000:{bus}:00.0/local_cpulist", f"{cpus}\n")
    return FakeNVML(
        [
            FakeGpu("GPU-a", "00000000:41:00.0", minor=0),
            FakeGpu("GPU-b", "00000000:42:00.0", minor=1, compute_mode=3),
            FakeGpu(
                "GPU-c",
                "00000000:C1:00.0",
                name="NVIDIA A100-SXM4-80GB",
                memory=80 << 30,
                minor=2,
                compute_mode=2,
                mig=(1, 1),
                mig_slots=[
                    FakeMig("MIG-c0", "NVIDIA A100-SXM4-80GB MIG 3g.40gb", 40 << 30),
                    None,  # an empty slot
                    FakeMig("MIG-c2", "NVIDIA A100-SXM4-80GB MIG 1g.10gb", 10 << 30),
                ],
            ),
            FakeGpu(
                "GPU-d",
                "00000000:C2:00.0",
                name="Tesla T4",
                memory=16 << 30,
                unsupported={
                    "nvmlDeviceGetMinorNumber",
                    "nvmlDeviceGetComputeMode",
                    "nvmlDeviceGetMigMode",
                },
            ),
        ]
    )


def test_gpu_modes_mig_and_numa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", four_gpu_host(tmp_path))
    gpus, note = gpu.discover_gpus(tmp_path)
    assert note is None
    assert [(g.uuid, g.minor, g.compute_mode, g.mig, g.node, g.local_cpus) for g in gpus] == [
        ("GPU-a", 0, "default", False, 0, "0-15"),
        ("GPU-b", 1, "exclusive-process", False, 0, "0-15"),
        ("GPU-c", 2, "prohibited", True, 1, "16-31"),
        ("GPU-d", None, "default", False, None, None),  # NotSupported: defaults, not a failure
    ]
    assert [(m.index, m.uuid, m.name, m.memory) for m in gpus[2].mig_instances] == [
        (0, "MIG-c0", "NVIDIA A100-SXM4-80GB MIG 3g.40gb", 40 << 30),
        (2, "MIG-c2", "NVIDIA A100-SXM4-80GB MIG 1g.10gb", 10 << 30),
    ]
    assert all(g.mig_instances == [] for g in gpus if g.uuid != "GPU-c")


def test_pending_mig_is_not_mig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slots: list[FakeMig | None] = [FakeMig("MIG-x", "1g.10gb", 10 << 30)]
    nvml = FakeNVML([FakeGpu("GPU-0", "00000000:41:00.0", mig=(0, 1), mig_slots=slots)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    (g,), _ = gpu.discover_gpus(tmp_path)
    assert g.mig is False and g.mig_instances == []  # enabled only after a GPU reset
    assert not any(name == "nvmlDeviceGetMaxMigDeviceCount" for name, _ in nvml.calls)


def test_a_lost_gpu_fails_discovery_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = FakeNVML()
    nvml.gpus[1].lost = True
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    gpus, note = gpu.discover_gpus(tmp_path)
    assert gpus == [] and note == "NVML query failed: GPU is lost" and nvml.shutdown


@pytest.mark.parametrize("call", ["nvmlInit", "nvmlDeviceGetUUID"])
def test_a_hung_driver_gives_no_gpus_and_a_reason_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    nvml = FakeNVML()
    nvml.hang.add(call)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    try:
        started = time.monotonic()
        gpus, note = gpu.discover_gpus(tmp_path, timeout=0.2)
        assert time.monotonic() - started < 2.0 and nvml.entered.is_set()
        assert gpus == [] and note is not None and note.startswith("NVML did not answer within")
    finally:
        nvml.release.set()  # no test leaves a thread behind


def test_topologies_captured_before_mig_fields_still_load() -> None:
    from nxrd.model.topology import Topology, load_topology
    from tests.unit.conftest import TOPOLOGIES

    topo = load_topology(TOPOLOGIES / "2socket-8gpu.json")
    assert len(topo.gpus) == 8
    assert {(g.minor, g.compute_mode, g.mig, len(g.mig_instances)) for g in topo.gpus} == {
        (None, "default", False, 0)
    }
    # and the new fields survive a capture and reload
    mig = topo.gpus[0].model_copy(update={"mig": True, "minor": 0})
    again = Topology.model_validate_json(topo.model_copy(update={"gpus": [mig]}).to_json())
    assert again.gpus[0].mig is True and again.gpus[0].minor == 0


def test_inconsistent_topology_files_are_refused(tmp_path: Path) -> None:
    import json

    from nxrd.errors import TopologyError
    from nxrd.model.topology import load_topology

    base = {"cpus": [{"id": 0, "core": 0}], "nodes": [{"id": 0, "memory": 1}], "memory": 1}
    cases = {
        "duplicate CPU ids": {**base, "cpus": [{"id": 0, "core": 0}, {"id": 0, "core": 1}]},
        "not in nodes": {**base, "cpus": [{"id": 0, "core": 0, "node": 3}]},
        "duplicate GPU indices": {
            **base,
            "gpus": [{"index": 0, "uuid": "a"}, {"index": 0, "uuid": "b"}],
        },
        "greater than or equal to 0": {**base, "memory": -1},
        "no CPUs": {**base, "cpus": []},
    }
    for expected, doc in cases.items():
        path = tmp_path / "t.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(TopologyError, match=expected):
            load_topology(path)
