"""Turning raw cgroup counters into what operators read: CPU %, throttled %, pressure.

Pure: parsed file contents and samples in, numbers out. nxrd reads the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nxrd.kernel.cgroupfs import parse_keyed


@dataclass(frozen=True)
class CpuSample:
    time: float  # monotonic seconds
    usage_usec: int
    throttled_usec: int
    nr_periods: int
    nr_throttled: int


def cpu_sample(time: float, cpu_stat: Mapping[str, str]) -> CpuSample:
    """A sample from cpu.stat as CgroupFS.read_keyed returns it."""

    def count(key: str) -> int:
        value = cpu_stat.get(key, "0").strip()
        return int(value) if value.isdigit() else 0

    return CpuSample(
        time,
        count("usage_usec"),
        count("throttled_usec"),
        count("nr_periods"),
        count("nr_throttled"),
    )


def cpu_rates(prev: CpuSample | None, cur: CpuSample) -> dict[str, float]:
    """CPU use in % of one CPU (as top shows it) and the % of periods that were throttled."""
    if prev is None or cur.time <= prev.time or cur.usage_usec < prev.usage_usec:
        return {}  # no interval yet, or a new cgroup (counters restarted)
    elapsed_usec = (cur.time - prev.time) * 1e6
    out = {"cpu_percent": round(100 * (cur.usage_usec - prev.usage_usec) / elapsed_usec, 1)}
    periods = cur.nr_periods - prev.nr_periods
    if periods > 0:
        throttled = cur.nr_throttled - prev.nr_throttled
        out["throttled_percent"] = round(100 * throttled / periods, 1)
    else:
        out["throttled_percent"] = 0.0
    return out


# What the controller reads of every workload it watches (nxrd.kernel.counters keeps them
# open): usage every tick, pressure every PSI_PERIOD. The kernel recomputes the avg10
# averages only that often (PSI_FREQ); reading them each tick cost three more reads per
# workload per tick for figures at most 2 s fresher. They explain decisions; none follows
# from them.
USAGE_FILES = ("cpu.stat", "memory.current", "memory.events")
PRESSURE_FILES = ("cpu.pressure", "memory.pressure", "io.pressure")
PSI_PERIOD = 2.0


def usage_signals(
    texts: Mapping[str, str | None], prev: CpuSample | None, now: float
) -> tuple[dict[str, float], CpuSample | None]:
    """A workload's usage from the contents of USAGE_FILES: CPU use and throttled periods
    (%) since the previous sample, memory.current (bytes) and memory.events counts. Returns
    them and this sample of cpu.stat."""
    out: dict[str, float] = {}
    cur = None
    stat = texts.get("cpu.stat")
    if stat is not None:
        cur = cpu_sample(now, parse_keyed(stat))
        out.update(cpu_rates(prev, cur))
    current = (texts.get("memory.current") or "").strip()
    if current.isdigit():
        out["memory_current"] = float(current)
    events = parse_keyed(texts.get("memory.events") or "")
    for key in ("high", "max", "oom_kill"):
        if events.get(key, "").strip().isdigit():
            out[f"memory_{key}_events"] = float(events[key])
    return out, cur


def pressure_signals(texts: Mapping[str, str | None]) -> dict[str, float]:
    """`some`/`full` avg10 (%) from the contents of PRESSURE_FILES (a missing one: none)."""
    out: dict[str, float] = {}
    for res in ("cpu", "memory", "io"):
        text = texts.get(f"{res}.pressure")
        if text:
            p = pressure(text)
            out[f"{res}_some"] = p.get("some_avg10", 0.0)
            if "full_avg10" in p:
                out[f"{res}_full"] = p["full_avg10"]
    return out


def pressure(text: str) -> dict[str, float]:
    """A *.pressure file -> {'some_avg10': .., 'full_avg10': .., 'some_total_usec': ..}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        for field in fields:
            key, _, value = field.partition("=")
            try:
                out[f"{kind}_{key}" if key != "total" else f"{kind}_total_usec"] = float(value)
            except ValueError:
                continue
    return out
