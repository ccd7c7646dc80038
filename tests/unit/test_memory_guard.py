"""The memory guard: when available memory and free swap both fall under their
thresholds, a batch or background workload is killed (background first, then the lowest
priority, then the largest), one at a time, never a latency-critical or interactive one;
its exit says why, and its restart policy applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.controller.victim import (
    MAX_WAIT,
    MIN_WAIT,
    MemoryUser,
    Thresholds,
    pick,
    short_of_memory,
    wait_before_next,
)
from nxrd.daemon.core import Daemon
from nxrd.errors import ProfileError
from nxrd.kernel.discovery import meminfo
from nxrd.kernel.fake_host import FakeHost
from nxrd.model.topology import load_topology
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES, start_daemon

GiB, MiB = 1 << 30, 1 << 20
T = Thresholds(available=5, swap_free=10)


def mem(available: int, swap: int = 0, swap_free: int = 0) -> dict[str, int]:
    return {
        "MemTotal": 8 * GiB,
        "MemAvailable": available,
        "SwapTotal": swap,
        "SwapFree": swap_free,
    }


def test_short_only_when_memory_and_swap_are_both_under_their_thresholds() -> None:
    assert short_of_memory(mem(1 * GiB), T) is None
    why = short_of_memory(mem(300 * MiB), T)  # 5% of 8G is 409.6M
    assert why == "memory available 300M (3.7%) < 5%"
    # swap still has room: the kernel swaps before it kills; the guard waits
    assert short_of_memory(mem(300 * MiB, 4 * GiB, 2 * GiB), T) is None
    why = short_of_memory(mem(300 * MiB, 4 * GiB, 100 * MiB), T)
    assert why == "memory available 300M (3.7%) < 5%, swap free 2.4% < 10%"


def test_it_looks_again_sooner_the_closer_the_machine_is_to_running_out() -> None:
    assert wait_before_next(mem(7 * GiB), T) == MAX_WAIT
    assert wait_before_next(mem(500 * MiB), T) == MIN_WAIT
    middle = wait_before_next(mem(3 * GiB), T)
    assert MIN_WAIT < middle < MAX_WAIT


def cand(name: str, cls: str, priority: int = 500, mib: int = 100) -> MemoryUser:
    return MemoryUser(name, cls, priority, mib * MiB)


def test_victims_background_first_then_lowest_priority_then_largest() -> None:
    chat, web = cand("chat", "latency-critical", 0, 4000), cand("web", "interactive", 0, 3000)
    big = cand("big", "batch", 500, 2000)
    small_low = cand("small-low", "batch", 100, 10)
    idx = cand("idx", "background", 900, 5)
    assert pick([chat, web, big, small_low, idx]) == idx
    assert pick([chat, web, big, small_low]) == small_low
    assert pick([big, cand("big2", "batch", 500, 3000)]).name == "big2"  # type: ignore[union-attr]
    assert pick([chat, web]) is None  # never the servers: the kernel's bands decide


def test_meminfo_is_read_in_bytes(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(
        "MemTotal:        2014480 kB\nMemAvailable:    1520000 kB\nHugePages_Total:       0\n"
    )
    assert meminfo(tmp_path / "meminfo") == {
        "MemTotal": 2014480 * 1024,
        "MemAvailable": 1520000 * 1024,
        "HugePages_Total": 0,
    }
    assert meminfo(tmp_path / "absent") == {}


PROFILE = """
[workloads.chat]
command = ["chat"]
class = "latency-critical"
cpus = 2
[workloads.embed]
command = ["embed"]
class = "batch"
priority = 300
[workloads.index]
command = ["index"]
class = "batch"
priority = 700
"""


def victims(host: FakeHost) -> list[str]:
    """Whose cgroups were killed, in order (a victim's leaf is killed again on its exit)."""
    assert host.proc_runtime is not None
    return list(dict.fromkeys(host.proc_runtime.killed))


def started(tmp_path: Path, profile: str = PROFILE) -> tuple[FakeHost, Daemon]:
    host = FakeHost(load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    d = start_daemon(tmp_path, host, profile)
    d.step(0.0, stopping=False)
    assert all(rec.pid is not None for rec in d.sup.records.values())
    return host, d


def test_the_machine_running_out_kills_the_lowest_priority_batch_job_once(tmp_path: Path) -> None:
    host, d = started(tmp_path)
    try:
        for cgroup in ("latency-critical/chat", "batch/embed", "batch/index"):
            d.fs.write(cgroup, "memory.current", str(1 * GiB))
        d.step(1.0, stopping=False)
        assert victims(host) == []
        host.memory["MemAvailable"] = 200 * MiB
        d.step(2.0, stopping=False)
        assert victims(host) == ["embed"]  # priority 300 before 700
        d.step(2.2, stopping=False)  # exited, but MemAvailable may not show it yet
        assert victims(host) == ["embed"]
        events = [e for e in d.events.since() if e.workload == "embed" and e.new == "exited"]
        assert events and events[-1].cause == (
            "killed for memory: memory available 200M (2.4%) < 10%; the lowest-priority batch "
            "workload (priority 300), using 1G"
        )
        assert d.sup.records["embed"].last_exit == "killed for memory"
        assert d.sup.records["chat"].pid is not None
        # Still short after it went: the next batch job, never the latency-critical one.
        d.step(2.6, stopping=False)
        assert victims(host) == ["embed", "index"]
    finally:
        d.close()


def test_with_nothing_but_servers_left_it_says_so_once_and_kills_nothing(tmp_path: Path) -> None:
    host, d = started(tmp_path, PROFILE.split("[workloads.embed]")[0])
    try:
        host.memory["MemAvailable"] = 100 * MiB
        for t in (1.0, 2.0, 3.0):
            d.step(t, stopping=False)
        assert victims(host) == []
        said = [e.cause for e in d.events.since() if "short of memory" in e.cause]
        assert said == [
            "short of memory (memory available 100M (1.2%) < 10%); no batch or background "
            "workload to kill"
        ]
    finally:
        d.close()


def test_a_profile_can_turn_it_off_or_move_its_thresholds(tmp_path: Path) -> None:
    off = "[host]\nmemory_guard = { enabled = false }\n" + PROFILE
    host, d = started(tmp_path, off)
    try:
        host.memory["MemAvailable"] = 100 * MiB
        d.step(1.0, stopping=False)
        assert victims(host) == []
    finally:
        d.close()
    with pytest.raises(ProfileError, match=r"host\.memory_guard\.available"):
        parse_profile("[host]\nmemory_guard = { available = 80 }\n" + PROFILE)
