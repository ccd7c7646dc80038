"""Cgroup files read every controller tick, through descriptors kept open between reads.

Re-reading from offset 0 of an open cgroup file gives its current contents without an
open/close per tick. A leaf removed and created again (a workload restarted) leaves the old
descriptor failing: it is closed and the file opened afresh.
"""

from __future__ import annotations

import contextlib
import os


class KeptOpen:
    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def read(self, path: str) -> str | None:
        """The file's contents now, or None when it does not exist."""
        for _ in range(2):
            fd = self.fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                self.fds[path] = fd
            try:
                return os.pread(fd, 65536, 0).decode()
            except OSError:
                self.forget(path)  # its cgroup went away: try a fresh one once
        return None

    def forget(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget_under(self, directory: str) -> None:
        """Close every file of a cgroup whose workload stopped: an open file would keep the
        removed cgroup alive in the kernel (a dying cgroup) for as long as nxrd runs."""
        for path in [p for p in self.fds if p.startswith(directory + "/")]:
            self.forget(path)

    def close(self) -> None:
        for path in list(self.fds):
            self.forget(path)
