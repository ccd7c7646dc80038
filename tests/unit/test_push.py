"""Pushed latencies over a real datagram socket: only a workload's own processes count."""

from __future__ import annotations

import os
from pathlib import Path

from nxrd.controller.push import PushReceiver
from nxrd.latency import LatencyReporter


def test_reports_count_only_from_the_workloads_own_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "latency.sock")
    me = os.getpid()
    rx = PushReceiver(path, owner_of=lambda pid: "chat" if pid == me else None)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o666"
        ok = LatencyReporter("chat", path)
        liar = LatencyReporter("rank", path)  # this process is not in rank's cgroup
        ok(0.125)
        ok(0.25)
        liar(9.0)
        ok.sock.sendto(b"chat not-a-number\n", path)
        assert rx.drain() == [("chat", 0.125), ("chat", 0.25)]
        assert rx.rejected == 1
        assert rx.drain() == []
        ok.close()
        liar.close()
    finally:
        rx.close()
    assert not Path(path).exists()
    LatencyReporter("chat", path)(0.1)  # nxrd gone: silently nothing
