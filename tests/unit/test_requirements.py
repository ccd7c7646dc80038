"""What `nxrd check` says for the cgroup setups operators meet."""

from __future__ import annotations

from nxrd.kernel.requirements import check, delegated, gpu_check, subtree_path, usable
from nxrd.model.topology import CgroupInfo

ALL = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"]


def lines(info: CgroupInfo) -> list[str]:
    return [r.line() for r in check(info)]


def test_pure_v2_as_root_is_standalone_under_nxr() -> None:
    info = CgroupInfo(mount="/sys/fs/cgroup", own_path="/", controllers=ALL, writable=True)
    assert usable(check(info)) and not delegated(info)
    assert subtree_path(info) == "/sys/fs/cgroup/nxr"
    assert lines(info)[-1] == "ok       subtree: /sys/fs/cgroup/nxr (standalone)"


def test_systemd_delegation_uses_the_units_cgroup() -> None:
    info = CgroupInfo(
        mount="/sys/fs/cgroup",
        own_path="/system.slice/nxrd.service",
        controllers=ALL,
        writable=True,
    )
    assert usable(check(info)) and delegated(info)
    assert subtree_path(info) == "/sys/fs/cgroup/system.slice/nxrd.service"


def test_hybrid_host_names_the_v1_controllers_and_the_fix() -> None:
    info = CgroupInfo(
        mount="/sys/fs/cgroup/unified",
        own_path="/",
        controllers=["hugetlb"],
        writable=True,
        v1_controllers=["blkio", "cpu", "cpuset", "memory", "pids"],
    )
    reqs = check(info)
    assert not usable(reqs)
    assert reqs[1].line() == (
        "MISSING  controllers: cgroup v2 controllers cpuset, cpu, io, memory, pids are bound to "
        "v1 hierarchies -> boot with systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
    )


def test_no_delegation_and_no_cgroup2() -> None:
    info = CgroupInfo(
        mount="/sys/fs/cgroup",
        own_path="/system.slice/nxrd.service",
        controllers=["memory", "pids"],
        writable=False,
    )
    text = "\n".join(lines(info))
    assert "cpuset, cpu, io not available in nxrd's cgroup /system.slice/nxrd.service" in text
    assert "run under systemd with Delegate=yes" in text
    assert "MISSING  subtree: cannot create cgroups" in text
    assert lines(CgroupInfo())[0].startswith("MISSING  cgroup v2: no cgroup2 filesystem is mounted")


def test_gpu_lines_fail_only_where_gpus_exist_and_the_filter_cannot_load() -> None:
    none = gpu_check(0, "nvidia-ml-py (pynvml) is not installed", None)
    assert usable(none) and [r.line() for r in none] == [
        "ok       GPUs: none (nvidia-ml-py (pynvml) is not installed): GPU requests refused"
    ]
    assert usable(gpu_check(2, None, None))
    why = (
        "cgroup device filter: this kernel has no cgroup device programs (needs CONFIG_CGROUP_BPF)"
    )
    bad = gpu_check(2, None, why)
    assert not usable(bad)
    assert bad[1].line() == (
        f"MISSING  GPU device filter: {why} -> a kernel with CONFIG_BPF_SYSCALL and "
        "CONFIG_CGROUP_BPF, and nxrd run as root"
    )
