"""What nxrd needs from the kernel, judged from discovered facts (pure: no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

from nxrd.model.topology import CgroupInfo

NEEDED = ("cpuset", "cpu", "io", "memory", "pids")
STANDALONE_ROOT = "/nxr"  # below the cgroup2 mount, when not delegated by systemd


@dataclass(frozen=True)
class Requirement:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "MISSING"
        fix = f" -> {self.fix}" if self.fix and not self.ok else ""
        return f"{status:8} {self.name}: {self.detail}{fix}"


def delegated(info: CgroupInfo) -> bool:
    """Whether systemd gave us our own cgroup (a unit with Delegate=yes), else standalone."""
    own = info.own_path or ""
    return own.endswith((".service", ".scope"))


def subtree_path(info: CgroupInfo) -> str | None:
    """Absolute path of the cgroup nxrd owns: its unit's cgroup, or /nxr when standalone."""
    if info.mount is None or info.own_path is None:
        return None
    rel = info.own_path if delegated(info) else STANDALONE_ROOT
    return info.mount.rstrip("/") + rel


def check(info: CgroupInfo, needed: tuple[str, ...] = NEEDED) -> list[Requirement]:
    """Each requirement with ok/missing and, when missing, the fix."""
    out: list[Requirement] = []
    if info.mount is None:
        out.append(
            Requirement(
                "cgroup v2",
                False,
                "no cgroup2 filesystem is mounted",
                "boot with systemd.unified_cgroup_hierarchy=1, "
                "or mount -t cgroup2 none /sys/fs/cgroup",
            )
        )
        return out
    out.append(Requirement("cgroup v2", True, f"mounted at {info.mount}"))
    v1 = [
        c
        for c in needed
        if c in info.v1_controllers or (c == "io" and "blkio" in info.v1_controllers)
    ]
    if v1:
        out.append(
            Requirement(
                "controllers",
                False,
                f"cgroup v2 controllers {', '.join(v1)} are bound to v1 hierarchies",
                "boot with systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all",
            )
        )
    missing = [c for c in needed if c not in info.controllers and c not in v1]
    if missing:
        where = info.own_path or "/"
        out.append(
            Requirement(
                "controllers",
                False,
                f"{', '.join(missing)} not available in nxrd's cgroup {where}",
                "run under systemd with Delegate=yes (units/nxrd.service), or as root in the "
                "root cgroup of a cgroup v2 host",
            )
        )
    if not v1 and not missing:
        out.append(Requirement("controllers", True, " ".join(needed) + " available"))
    mode = "delegated by systemd" if delegated(info) else "standalone"
    if info.writable:
        out.append(Requirement("subtree", True, f"{subtree_path(info)} ({mode})"))
    else:
        out.append(
            Requirement(
                "subtree",
                False,
                f"cannot create cgroups below {info.mount}{info.own_path} ({mode})",
                "run nxrd as root, or under systemd with Delegate=yes",
            )
        )
    return out


def gpu_check(gpus: int, note: str | None, filter_error: str | None) -> list[Requirement]:
    """The GPU lines: on a host with GPUs every leaf gets a device filter before its workload
    starts, so a kernel that cannot load one starts no workload at all."""
    if not gpus:
        return [Requirement("GPUs", True, f"none ({note or 'none found'}): GPU requests refused")]
    out = [Requirement("GPUs", True, f"{gpus} found through NVML")]
    if filter_error is None:
        detail = "cgroup device programs load: a workload opens only its own /dev/nvidiaN"
        out.append(Requirement("GPU device filter", True, detail))
    else:
        fix = "a kernel with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF, and nxrd run as root"
        out.append(Requirement("GPU device filter", False, filter_error, fix))
    return out


def usable(reqs: list[Requirement]) -> bool:
    return all(r.ok for r in reqs)
