"""A plan's cgroup values, typed, and the one renderer from them to cgroup file contents.

The planner builds these, `nxrd/kernel/apply.py` writes what render() gives, and the
controller renders its own `cpu.max` through cpu_max() below, so a value is spelled one way
wherever nxr writes it. parse() reads a plan's files back (a plan loaded from its JSON).
"""

from __future__ import annotations

from nxrd.model.base import Data
from nxrd.model.units import format_cpu_list, parse_cpu_list

CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1000  # the kernel refuses a cpu.max quota under 1 ms
DEFAULT_WEIGHT = 100


def cpu_quota(cpus: float, period: int = CPU_PERIOD_US) -> int:
    """A cap of `cpus` CPUs as a cpu.max quota in microseconds per period."""
    return max(MIN_QUOTA_US, round(cpus * period))


def cpu_max(quota_us: int | None, period: int = CPU_PERIOD_US) -> str:
    """cpu.max's contents: "max 100000" (no cap) or "150000 100000"."""
    return f"{'max' if quota_us is None else quota_us} {period}"


def _limit(value: int | None) -> str:
    return "max" if value is None else str(value)


def _read_limit(text: str) -> int | None:
    return None if text == "max" else int(text)


class LeafValues(Data):
    """Every file nxr writes in a workload's leaf. Every one is written, defaults included,
    so a re-apply leaves no stale value behind."""

    cpus: frozenset[int]
    mems: frozenset[int]
    idle: bool = False
    weight: int = DEFAULT_WEIGHT  # not written while idle (the kernel refuses it)
    cpu_quota_us: int | None = None  # None: no cap
    cpu_period_us: int = CPU_PERIOD_US
    memory_min: int = 0
    memory_low: int = 0
    memory_high: int | None = None  # None: "max"
    memory_max: int | None = None
    swap_max: int | None = None
    zswap_max: int | None = None  # None: not written (the file exists only with zswap)
    pids_max: int | None = None
    io_weight: int = DEFAULT_WEIGHT

    def render(self) -> dict[str, str]:
        """The leaf's cgroup files, in the order they are written."""
        files = {
            "cpuset.cpus": format_cpu_list(self.cpus),
            "cpuset.mems": format_cpu_list(self.mems),
            # cpu.idle goes to 0 before the weight: the kernel refuses weights of idle groups.
            "cpu.idle": "1" if self.idle else "0",
        }
        if not self.idle:
            files["cpu.weight"] = str(self.weight)
        files["cpu.max"] = cpu_max(self.cpu_quota_us, self.cpu_period_us)
        files["memory.min"] = str(self.memory_min)
        files["memory.low"] = str(self.memory_low)
        files["memory.high"] = _limit(self.memory_high)
        files["memory.max"] = _limit(self.memory_max)
        files["memory.swap.max"] = _limit(self.swap_max)
        if self.zswap_max is not None:
            files["memory.zswap.max"] = str(self.zswap_max)
        # An OOM kill takes the whole workload, not a random thread of it: one exit cause.
        files["memory.oom.group"] = "1"
        files["pids.max"] = _limit(self.pids_max)
        files["io.weight"] = f"default {self.io_weight}"
        return files

    @classmethod
    def parse(cls, files: dict[str, str]) -> LeafValues:
        """The values a leaf's rendered files stand for (the inverse of render)."""
        quota, period = files["cpu.max"].split()
        return cls(
            cpus=parse_cpu_list(files["cpuset.cpus"]),
            mems=parse_cpu_list(files["cpuset.mems"]),
            idle=files["cpu.idle"] == "1",
            weight=int(files.get("cpu.weight", DEFAULT_WEIGHT)),
            cpu_quota_us=_read_limit(quota),
            cpu_period_us=int(period),
            memory_min=int(files["memory.min"]),
            memory_low=int(files["memory.low"]),
            memory_high=_read_limit(files["memory.high"]),
            memory_max=_read_limit(files["memory.max"]),
            swap_max=_read_limit(files["memory.swap.max"]),
            zswap_max=_read_limit(files.get("memory.zswap.max", "max")),
            pids_max=_read_limit(files["pids.max"]),
            io_weight=int(files["io.weight"].split()[-1]),
        )


class ParentValues(Data):
    """A class parent (or the subtree root): the split between classes, and its children's
    memory protection summed (memory.min/low only work top-down)."""

    weight: int | None = None  # cpu.weight; None: not written (the root)
    idle: bool = False  # cpu.idle instead of a weight
    memory_min: int = 0
    memory_low: int = 0

    def render(self) -> dict[str, str]:
        files: dict[str, str] = {}
        if self.idle:
            files["cpu.idle"] = "1"
        elif self.weight is not None:
            files["cpu.weight"] = str(self.weight)
        files["memory.min"] = str(self.memory_min)
        files["memory.low"] = str(self.memory_low)
        return files

    @classmethod
    def parse(cls, files: dict[str, str]) -> ParentValues:
        weight = files.get("cpu.weight")
        return cls(
            weight=None if weight is None else int(weight),
            idle=files.get("cpu.idle") == "1",
            memory_min=int(files["memory.min"]),
            memory_low=int(files["memory.low"]),
        )
