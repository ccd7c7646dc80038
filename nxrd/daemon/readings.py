"""What nxrd reads of its workloads' leaves: usage, throttling and pressure for each
controller tick, and a CPU sample per second for status's rates; and of the sockets of
workloads that declare a port, the connections waiting to be accepted (listen_queue)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nxrd.controller.observe import (
    PRESSURE_FILES,
    PSI_PERIOD,
    USAGE_FILES,
    CpuSample,
    cpu_rates,
    cpu_sample,
    pressure_signals,
    usage_signals,
)
from nxrd.kernel.cgroupfs import parse_keyed
from nxrd.kernel.host import Counters, Listening
from nxrd.supervisor.supervisor import Record


class Readings:
    def __init__(self, counters: Counters, root: Path, listening: Listening | None = None) -> None:
        self.counters, self.root, self.listening = counters, str(root), listening
        self.tick_cpu: dict[str, CpuSample] = {}  # the previous tick's, for throttling
        # workload -> (its pid, when read, its pressure signals): re-read every PSI_PERIOD
        self.tick_pressure: dict[str, tuple[int, float, dict[str, float]]] = {}
        self.samples: dict[str, tuple[CpuSample, CpuSample | None]] = {}  # last, one before

    def leaf(self, rec: Record) -> str:
        """The workload's leaf as a plain string: pathlib joins cost more than the reads."""
        return f"{self.root}/{rec.plan.cgroup}"

    def tick(
        self, names: list[str], records: Mapping[str, Record], now: float
    ) -> dict[str, dict[str, float]]:
        """Usage, throttling, memory and pressure of running workloads, read every
        controller tick through kept-open files (pressure only when the kernel has new
        averages)."""
        out = {}
        for name in names:
            rec = records.get(name)
            if rec is None or rec.pid is None:
                self.tick_cpu.pop(name, None)
                self.tick_pressure.pop(name, None)
                continue
            leaf = self.leaf(rec)
            texts = {f: self.counters.read(f"{leaf}/{f}") for f in USAGE_FILES}
            out[name], cur = usage_signals(texts, self.tick_cpu.get(name), now)
            if cur is not None:
                self.tick_cpu[name] = cur
            held = self.tick_pressure.get(name)
            if held is None or held[0] != rec.pid or now - held[1] >= PSI_PERIOD:
                texts = {f: self.counters.read(f"{leaf}/{f}") for f in PRESSURE_FILES}
                held = self.tick_pressure[name] = (rec.pid, now, pressure_signals(texts))
            out[name].update(held[2])
        ports = {name: port for name in out if (port := records[name].spec.port) is not None}
        if self.listening is not None and ports:
            waiting = self.listening.read(ports.values())
            for name, port in ports.items():
                if port in waiting:
                    out[name]["listen_queue"] = float(waiting[port])
        return out

    def close(self) -> None:
        self.counters.close()
        if self.listening is not None:
            self.listening.close()

    def sample(self, records: Mapping[str, Record], now: float) -> None:
        """CPU counters of every running workload, so status can show rates (a workload
        the controller watches was read by its tick, less than a second ago)."""
        for rec in list(records.values()):
            leaf = self.leaf(rec)
            if rec.pid is None:
                self.samples.pop(rec.name, None)
                self.counters.forget_under(leaf)
                continue
            cur = self.tick_cpu.get(rec.name)
            if cur is None or now - cur.time >= 1.0:
                text = self.counters.read(f"{leaf}/cpu.stat")
                if text is None:
                    continue
                cur = cpu_sample(now, parse_keyed(text))
            last = self.samples.get(rec.name, (None, None))[0]
            if cur is not last:
                self.samples[rec.name] = (cur, last)

    def rates(self, name: str) -> dict[str, float]:
        """CPU %, throttling % of the last second (nothing before two samples)."""
        last, before = self.samples.get(name, (None, None))
        return {} if last is None else cpu_rates(before, last)
