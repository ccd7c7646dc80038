"""A plan's cgroup values land in the kernel exactly as planned, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nxrd.errors import KernelError
from nxrd.kernel.apply import apply_plan, read_back
from nxrd.kernel.cgroupfs import LinuxCgroupFS
from nxrd.kernel.discovery import discover
from nxrd.model.units import format_cpu_list, parse_cpu_list
from nxrd.plan import Plan, make_plan
from nxrd.profile import parse_profile

PROFILE = """
[workloads.chat]
command = ["sleep", "60"]
class = "latency-critical"
cpus = 1
memory_max = "512M"
memory_min = "64M"
pids_max = 64

[workloads.api]
command = ["sleep", "60"]
class = "interactive"
memory_high = "200M"
memory_max = "300M"
memory_low = "100M"
cpu_weight = 250
io_weight = 300

[workloads.embed]
command = ["sleep", "60"]
class = "batch"
cpu_max = "50%"
memory_max = "1000000"
swap_max = "0"

[workloads.index]
command = ["sleep", "60"]
class = "background"
"""


def _plan() -> Plan:
    return make_plan(parse_profile(PROFILE, "kernel-test"), discover(gpus=False))


def test_every_planned_value_reads_back(scratch_fs: LinuxCgroupFS, scratch: Path) -> None:
    plan = _plan()
    apply_plan(plan, scratch_fs)
    got = read_back(plan, scratch_fs)
    for path, files in got.items():
        planned = (
            plan.root.files
            if path == ""
            else next((c.files for c in plan.classes if c.path == path), None)
            or plan.workload(path.split("/")[-1]).files
        )
        assert files == planned, path
    # The leaves really are where the plan says, with the controllers enabled.
    for wl in plan.workloads:
        leaf = scratch / wl.cgroup
        assert (leaf / "cpu.max").exists() and (leaf / "memory.max").exists()
    # And the non-obvious kernel forms: a non-page-aligned size was rounded down.
    assert (scratch / "batch/embed/memory.max").read_text().strip() == str(1000000 // 4096 * 4096)
    assert (scratch / "background/cpu.idle").read_text().strip() == "1"


def test_a_failed_apply_leaves_nothing_behind(scratch_fs: LinuxCgroupFS, scratch: Path) -> None:
    plan = _plan()
    # A CPU this VM does not have: the kernel refuses it halfway through the tree.
    last = plan.workloads[-1]
    broken = last.model_copy(update={"files": {**last.files, "cpuset.cpus": "63"}})
    plan = plan.model_copy(update={"workloads": [*plan.workloads[:-1], broken]})
    before_min = (scratch / "memory.min").read_text()
    with pytest.raises(KernelError, match=r"cpuset\.cpus"):
        apply_plan(plan, scratch_fs)
    assert [p.name for p in scratch.iterdir() if p.is_dir()] == []
    assert (scratch / "memory.min").read_text() == before_min


def test_apply_is_repeatable(scratch_fs: LinuxCgroupFS) -> None:
    plan = _plan()
    apply_plan(plan, scratch_fs)
    apply_plan(plan, scratch_fs)  # re-applying the same plan is a no-op, not an error
    assert os.path.isdir(scratch_fs.describe("latency-critical/chat"))


def test_nxrd_plans_within_the_cpus_a_parent_allows_and_refuses_beyond_them(
    scratch_fs: LinuxCgroupFS, scratch: Path
) -> None:
    # The kernel takes a child's cpuset.cpus outside its parent's and runs it on the
    # parent's CPUs instead: nxrd plans within what its cgroup may use, and refuses a plan
    # beyond that rather than pin workloads onto shared cores.
    (scratch / "cpuset.cpus").write_text("0")  # as systemd's AllowedCPUs=0 would
    leaf = scratch / "probe"
    leaf.mkdir()
    (leaf / "cpuset.cpus").write_text("1")  # accepted...
    assert (leaf / "cpuset.cpus.effective").read_text().strip() == "0"  # ...and not used
    leaf.rmdir()
    topo = discover(gpus=False, subtree=str(scratch))
    assert (topo.cgroup.cpus, [c.id for c in topo.cpus]) == ("0", [0, 1])
    shared_only = PROFILE[PROFILE.index("[workloads.api]") :]  # chat's own core would not fit
    plan = make_plan(parse_profile(shared_only, "kernel-test"), topo)
    assert plan.online_cpus == "0" and plan.warnings[0].startswith("planning on CPUs 0 of")
    apply_plan(plan, scratch_fs)
    for wl in plan.workloads:
        assert (scratch / wl.cgroup / "cpuset.cpus.effective").read_text().strip() == "0"
    for wl in plan.workloads:
        scratch_fs.rmdir(wl.cgroup)
    beyond = _plan()  # planned on the whole VM, as before a limit narrowed the reach
    used = {c for w in beyond.workloads for c in parse_cpu_list(w.files["cpuset.cpus"])}
    outside = format_cpu_list(used - {0})
    with pytest.raises(KernelError, match=rf"the plan uses CPUs {outside}, but .* only 0 "):
        apply_plan(beyond, scratch_fs)
    # nothing written: the first plan's class parents only, no leaf of the refused one
    assert {p.name for p in scratch.iterdir() if p.is_dir()} == {c.path for c in plan.classes}
