"""Taking ownership of nxrd's cgroup subtree: its own leaf, the controllers, the tree.

cgroup v2 lets only leaves hold processes ("no internal processes"), so whatever sits in
the subtree's root moves into <subtree>/nxrd before controllers are enabled for the
subtree's children: nxrd itself when the subtree is its own (standalone, or its own
unit's), the holder process of the unit that lends it the subtree otherwise.

Under systemd the subtree is another unit's (units/nxr-workloads.service), not nxrd's
own: systemd puts a restarted nxrd's first process into nxrd's unit cgroup, which the
kernel refuses (EBUSY, status 219/CGROUP) while that cgroup passes controllers on to a
tree of running workloads. So after a crash systemd could never start nxrd again.
"""

from __future__ import annotations

import os
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS, LinuxCgroupFS
from nxrd.kernel.requirements import NEEDED
from nxrd.model.plan import DAEMON_LEAF


def take_subtree(root: Path, own: str | None, pid: int | None = None) -> LinuxCgroupFS:
    """Create root if needed, move pid (default: us; own: its cgroup's path) into root/nxrd
    unless root is another unit's cgroup, enable controllers."""
    pid = pid or os.getpid()
    parent = root.parent
    inside = own is not None and (Path(own) == root or root in Path(own).parents)
    lent = root.is_dir() and root.name.endswith((".service", ".scope")) and not inside
    if not root.is_dir():
        # Standalone: the parent (the cgroup2 root) must pass the controllers down first.
        LinuxCgroupFS(parent).enable("", list(NEEDED))
        try:
            root.mkdir()
            os.chmod(root, 0o755)  # as every leaf below it: workloads read their limits
        except OSError as e:
            raise KernelError(f"cannot create nxrd's cgroup {root}: {e.strerror}") from None
    fs = LinuxCgroupFS(root)
    prepare(fs, None if lent else pid)
    return fs


def prepare(fs: CgroupFS, pid: int | None) -> None:
    """Move pid (None: nxrd stays where it is) into the daemon leaf, then enable every
    needed controller for children."""
    if not fs.exists(DAEMON_LEAF):
        fs.mkdir(DAEMON_LEAF)
    # Everything else still in the subtree root (the unit's first processes) moves too.
    for other in fs.procs(""):
        fs.move(DAEMON_LEAF, other)
    if pid is not None and pid not in fs.procs(DAEMON_LEAF):
        fs.move(DAEMON_LEAF, pid)
    fs.require(list(NEEDED))
    fs.enable("", list(NEEDED))


def unit_cgroup(unit: str, mount: str = "/sys/fs/cgroup") -> str:
    """The cgroup of a running systemd unit (`--cgroup-root unit:NAME`): where systemd put
    it, whichever slice that is (a unit started before an upgrade moved it stays where
    it is until restarted)."""
    import subprocess

    try:
        r = subprocess.run(
            ["systemctl", "show", "--property=ControlGroup", "--value", unit],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"--cgroup-root unit:{unit}: cannot ask systemd: {e}") from None
    group = r.stdout.strip()
    if r.returncode != 0 or not group:
        raise KernelError(f"--cgroup-root unit:{unit}: the unit is not running (no cgroup)")
    return mount + group
