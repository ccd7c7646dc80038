"""Which workload a PID belongs to: who may report a latency, whose GPU memory NVML shows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nxrd.kernel.host import Host
from nxrd.supervisor.supervisor import Record


class PidIndex:
    """A workload's main process, once found in its leaf, is known by its PID while it lives,
    as told by a pidfd taken before the lookup (the shim reaps it, and its PID may go to
    another process before nxrd hears of the exit): reading /proc for each latency report
    cost nxrd more than the rest of a report's handling."""

    def __init__(self, host: Host, root: Path) -> None:
        self.host, self.root = host, str(root)
        self.main: dict[int, tuple[str, int]] = {}  # main pid -> (its workload, a pidfd)

    def workload_of(self, pid: int, records: Mapping[str, Record]) -> str | None:
        """The workload whose cgroup holds pid (or None)."""
        held = self.main.get(pid)
        if held is not None:
            known, pidfd = held
            rec = records.get(known)
            if rec is not None and rec.pid == pid and not self.host.gone(pidfd):
                return known
            self.forget(pid)
        fd = self.host.hold(pid)
        if fd is None:
            return None  # gone already
        name: str | None = None
        path = self.host.cgroup_of(pid)
        if path is not None and path.startswith(self.root + "/"):
            name = _owner(path[len(self.root) + 1 :], records)
        if name is not None and records[name].pid == pid:
            self.main[pid] = (name, fd)
        else:
            self.host.release(fd)
        return name

    def sweep(self, records: Mapping[str, Record]) -> None:
        """Let go of main processes that are no longer their workload's."""
        for pid, (name, _) in list(self.main.items()):
            rec = records.get(name)
            if rec is None or rec.pid != pid:
                self.forget(pid)

    def forget(self, pid: int) -> None:
        _, fd = self.main.pop(pid)
        self.host.release(fd)

    def close(self) -> None:
        for pid in list(self.main):
            self.forget(pid)


def _owner(rel: str, records: Mapping[str, Record]) -> str | None:
    """The workload whose leaf is rel (a cgroup below nxrd's root) or holds it."""
    for rec in records.values():
        if rel == rec.plan.cgroup or rel.startswith(rec.plan.cgroup + "/"):
            return rec.name
    return None
