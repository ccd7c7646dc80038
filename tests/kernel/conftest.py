"""Kernel tier: real cgroup v2 as root, inside the test VM only (scripts/vm-test.sh).

Each test gets a scratch subtree under the VM's cgroup root, removed afterwards.
These tests fail, never skip, when the kernel lacks what they check.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.kernel.cgroupfs import LinuxCgroupFS

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ["cpuset", "cpu", "io", "memory", "pids"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session", autouse=True)
def in_test_vm() -> None:
    # Never touch a host's own cgroups: the developer and CI machines account their processes there.
    if os.environ.get("NXR_KERNEL_TIER") != "1":
        pytest.fail("the kernel tier runs only inside the test VM: bash scripts/vm-test.sh")
    if os.geteuid() != 0:
        pytest.fail("the kernel tier needs root")
    controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    missing = [c for c in CONTROLLERS if c not in controllers]
    if missing:
        pytest.fail(f"cgroup v2 controllers missing at {CGROUP_ROOT}: {', '.join(missing)}")
    (CGROUP_ROOT / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))


def kill_tree(path: Path) -> None:
    """Kill everything in the cgroup tree at path, then remove it, leaves first."""
    if not path.exists():
        return
    if (path / "cgroup.kill").exists():
        (path / "cgroup.kill").write_text("1")
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        kill_tree(child)
    for _ in range(200):  # killed tasks leave the cgroup asynchronously
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
    path.rmdir()


@pytest.fixture
def cgroup_root() -> Iterator[Path]:
    """A path for nxrd's subtree (nxrd creates it); everything in it is killed afterwards."""
    path = Path(f"/sys/fs/cgroup/nxr-test-{uuid.uuid4().hex[:8]}")
    yield path
    kill_tree(path)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh cgroup with every controller enabled for its children."""
    path = CGROUP_ROOT / f"nxr-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
    try:
        yield path
    finally:
        kill_tree(path)


@pytest.fixture
def scratch_fs(scratch: Path) -> LinuxCgroupFS:
    return LinuxCgroupFS(scratch)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 on a loop device: page cache the kernel can drop (the VM's own
    filesystems are tmpfs and 9p)."""
    for module in ("loop", "ext4"):
        subprocess.run(["modprobe", module], check=True, capture_output=True, timeout=60)
    # the image on a tmpfs of its own: the VM's /tmp may not hold it (ENOSPC through loop)
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400M", "tmpfs", str(backing)], check=True)
    image = backing / "disk.img"
    try:
        with image.open("wb") as f:
            f.truncate(320 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=120)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, timeout=60)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False, timeout=60)
    finally:
        subprocess.run(["umount", str(backing)], check=False, timeout=60)
