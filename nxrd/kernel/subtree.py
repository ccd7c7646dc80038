"""Taking ownership of nxrd's cgroup subtree: its own leaf, the controllers, the tree.

cgroup v2 lets only leaves hold processes ("no internal processes"), so nxrd moves
itself into <subtree>/nxrd before enabling controllers for the subtree's children.
"""

from __future__ import annotations

import os
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS, LinuxCgroupFS
from nxrd.kernel.requirements import NEEDED
from nxrd.model.plan import DAEMON_LEAF


def take_subtree(root: Path, pid: int | None = None) -> LinuxCgroupFS:
    """Create root if needed, move pid (default: us) into root/nxrd, enable controllers."""
    pid = pid or os.getpid()
    parent = root.parent
    if not root.is_dir():
        # Standalone: the parent (the cgroup2 root) must pass the controllers down first.
        LinuxCgroupFS(parent).enable("", list(NEEDED))
        try:
            root.mkdir()
            os.chmod(root, 0o755)  # as every leaf below it: workloads read their limits
        except OSError as e:
            raise KernelError(f"cannot create nxrd's cgroup {root}: {e.strerror}") from None
    fs = LinuxCgroupFS(root)
    prepare(fs, pid)
    return fs


def prepare(fs: CgroupFS, pid: int) -> None:
    """Move pid into the daemon leaf, then enable every needed controller for children."""
    if not fs.exists(DAEMON_LEAF):
        fs.mkdir(DAEMON_LEAF)
    # Everything else still in the subtree root (the unit's first processes) moves too.
    for other in fs.procs(""):
        fs.move(DAEMON_LEAF, other)
    if pid not in fs.procs(DAEMON_LEAF):
        fs.move(DAEMON_LEAF, pid)
    fs.require(list(NEEDED))
    fs.enable("", list(NEEDED))
