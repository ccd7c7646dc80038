"""Write a plan's cgroup tree: all of it, or (on any failure) none of it."""

from __future__ import annotations

import contextlib

from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS, controller_of
from nxrd.model.plan import DAEMON_LEAF, Plan
from nxrd.model.units import format_cpu_list, parse_cpu_list


def controllers_needed(plan: Plan) -> list[str]:
    """Controllers the plan's files belong to, in the order the kernel lists them."""
    names = {controller_of(f) for w in plan.workloads for f in w.files}
    names |= {controller_of(f) for c in plan.classes for f in c.files}
    names |= {controller_of(f) for f in plan.root.files}
    order = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"]
    return sorted((n for n in names if n), key=lambda n: order.index(n) if n in order else 99)


class _Undo:
    """Every change made so far, so a failed apply can leave the tree as it found it."""

    def __init__(self, fs: CgroupFS) -> None:
        self.fs = fs
        self.created: set[str] = set()
        self.log: list[tuple[str, str, str]] = []  # (kind, rel, detail), in the order done

    def mkdir(self, rel: str) -> None:
        if not self.fs.exists(rel):
            self.fs.mkdir(rel)
            self.created.add(rel)
            self.log.append(("mkdir", rel, ""))

    def enable(self, rel: str, controllers: list[str]) -> None:
        before = set(self.fs.subtree_control(rel))
        self.fs.enable(rel, controllers)
        for c in controllers:
            if c not in before:
                self.log.append(("enable", rel, c))

    def write(self, rel: str, filename: str, value: str) -> None:
        old = None if rel in self.created else self.fs.read(rel, filename)
        if old == value:
            return  # touch only what changed: a rewrite may still cost the kernel work
        self.fs.write(rel, filename, value)
        if old is not None:
            self.log.append(("write", rel, f"{filename}={old}"))

    def rollback(self) -> None:
        for kind, rel, detail in reversed(self.log):
            # Best effort: the error that started the rollback is the one to report.
            with contextlib.suppress(KernelError):
                if kind == "write":
                    filename, _, old = detail.partition("=")
                    self.fs.write(rel, filename, old)
                elif kind == "mkdir":
                    self.fs.rmdir(rel)
                else:
                    self.fs.write(rel, "cgroup.subtree_control", f"-{detail}")


def _check_within_reach(plan: Plan, fs: CgroupFS) -> None:
    """cgroup v2 accepts a cpuset.cpus (or .mems) outside the parent's and quietly runs the
    cgroup on what both have, or on the parent's if nothing: pinned workloads would share
    cores the plan keeps apart. The plan is made within nxrd's reach at start
    (Topology.within_reach); this catches a reach that shrank since (CPUs gone offline, a
    parent's AllowedCPUs= or AllowedMemoryNodes= changed) on a reload or an apply."""
    for kind, what in (("cpus", "CPUs"), ("mems", "memory nodes")):
        allowed_text = fs.read("", f"cpuset.{kind}.effective").strip()
        if not allowed_text:
            continue  # not known (a fake tree): nothing to compare with
        wanted = {c for w in plan.workloads for c in getattr(w.values, kind)}
        if kind == "cpus" and fs.exists(DAEMON_LEAF):
            wanted |= parse_cpu_list(plan.daemon_cpus)
        beyond = wanted - parse_cpu_list(allowed_text)
        if beyond:
            raise KernelError(
                f"the plan uses {what} {format_cpu_list(beyond)}, but {fs.describe('')} may "
                f"use only {allowed_text} (its cpuset.{kind}.effective: a parent cgroup's "
                f"limit, or {what} gone offline, since nxrd read it at start): restart nxrd "
                "to plan within it"
            )


def _has(fs: CgroupFS, rel: str, filename: str) -> bool:
    """Whether the kernel offers this file (those of BFQ and zswap exist only with them)."""
    try:
        fs.read(rel, filename)
    except KernelError:
        return False
    return True


def _bfq_weight(undo: _Undo, rel: str, files: dict[str, str]) -> None:
    """io.weight acts through io.cost; where a disk runs BFQ, BFQ reads io.bfq.weight
    instead (1-1000), which exists while BFQ is loaded: the same weight goes there too."""
    weight = files.get("io.weight", "").split()
    if weight and _has(undo.fs, rel, "io.bfq.weight"):
        undo.write(rel, "io.bfq.weight", f"default {min(1000, max(1, int(weight[-1])))}")


def _zswap_default(undo: _Undo, rel: str, files: dict[str, str]) -> None:
    """memory.zswap.max is written only while the profile sets zswap_max (the file exists
    only on kernels with zswap): once it is taken out, the kernel's default goes back."""
    if "memory.zswap.max" in files or rel in undo.created:
        return
    if _has(undo.fs, rel, "memory.zswap.max"):
        undo.write(rel, "memory.zswap.max", "max")


def apply_plan(plan: Plan, fs: CgroupFS) -> None:
    """Create the class parents and workload leaves and write every planned value."""
    needed = controllers_needed(plan)
    fs.require(needed)
    if "cpuset" in needed:
        _check_within_reach(plan, fs)  # before any write: all or nothing
    undo = _Undo(fs)
    try:
        undo.enable("", needed)
        for cls in plan.classes:
            undo.mkdir(cls.path)
            undo.enable(cls.path, needed)
        # Parents first: a child's memory protection is capped by its parent's.
        for filename, value in plan.root.files.items():
            undo.write("", filename, value)
        for cls in plan.classes:
            for filename, value in cls.files.items():
                undo.write(cls.path, filename, value)
            _bfq_weight(undo, cls.path, cls.files)
        if fs.exists(DAEMON_LEAF) and "cpuset" in needed:
            # nxrd's own work (its loop, the latency receiver, the shims, MPS daemons) keeps
            # off the cores that workloads hold exclusively: those are theirs alone
            undo.write(DAEMON_LEAF, "cpuset.cpus", plan.daemon_cpus)
        for wl in plan.workloads:
            undo.mkdir(wl.cgroup)
            for filename, value in wl.files.items():
                undo.write(wl.cgroup, filename, value)
            _bfq_weight(undo, wl.cgroup, wl.files)
            _zswap_default(undo, wl.cgroup, wl.files)
    except KernelError:
        undo.rollback()
        raise


def read_back(plan: Plan, fs: CgroupFS) -> dict[str, dict[str, str]]:
    """Every planned file's current value, by cgroup path."""
    out: dict[str, dict[str, str]] = {}
    for path, files in (
        [(plan.root.path, plan.root.files)]
        + [(c.path, c.files) for c in plan.classes]
        + [(w.cgroup, w.files) for w in plan.workloads]
    ):
        out[path] = {f: fs.read(path, f) for f in files}
    return out
