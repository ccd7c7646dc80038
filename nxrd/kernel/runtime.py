"""The kernel operations the supervisor needs, as one interface (linux_runtime.py: the real one)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from nxrd.model.plan import WorkloadPlan
from nxrd.profile.model import Workload


@dataclass(frozen=True)
class Started:
    pid: int
    shim_pid: int


@dataclass(frozen=True)
class Ended:
    """How a process ended, as its shim recorded it (None/None: unknown)."""

    code: int | None
    signal: int | None


class Runtime(ABC):
    # The push socket's path, told to workloads as NXR_LATENCY_SOCKET (None: no pushes).
    latency_socket: str | None = None
    # Where each workload's current CPUs are published, told as NXR_CPUS_FILE (None: not).
    cpus_dir: Path | None = None

    @abstractmethod
    def ensure_cgroup(self, wl: WorkloadPlan) -> None:
        """Create the workload's leaf if missing and write its planned values."""

    @abstractmethod
    def launch(self, wl: WorkloadPlan, spec: Workload) -> Started:
        """Start the workload in its leaf; raises NxrError when it cannot be started."""

    @abstractmethod
    def ended(self, name: str, shim_pid: int) -> Ended | None:
        """How the workload ended, or None while it (its shim) is still running."""

    @abstractmethod
    def signal(self, pid: int, sig: int) -> None:
        """Send sig to the workload's process group (it leads its own session)."""

    @abstractmethod
    def kill_all(self, wl: WorkloadPlan) -> None:
        """Kill every process left in the workload's cgroup (cgroup.kill)."""

    @abstractmethod
    def populated(self, wl: WorkloadPlan) -> bool:
        """Whether any process is left in the workload's cgroup."""

    @abstractmethod
    def oom_kills(self, wl: WorkloadPlan) -> int:
        """memory.events oom_kill of the workload's cgroup (0 if it has none)."""

    @abstractmethod
    def freeze(self, wl: WorkloadPlan, frozen: bool) -> None:
        """Freeze (or thaw) every process in the workload's cgroup (cgroup.freeze)."""

    @abstractmethod
    def remove_cgroup(self, wl: WorkloadPlan) -> None:
        """Remove the workload's (empty) leaf."""

    @abstractmethod
    def log_file(self, name: str) -> Path:
        """Where the workload's output is kept."""

    @abstractmethod
    def status_file(self, name: str) -> Path:
        """The shim's record of the workload it runs (pid, shim pid, exit)."""

    def publish_cpus(self, name: str, line: str) -> None:
        """Write the workload's current CPUs ("4 0-3") to its file in cpus_dir."""
        return None

    @abstractmethod
    def write_front(self, name: str, config: str) -> Path:
        """Write a front's HAProxy configuration where it reads it; returns its directory."""

    @abstractmethod
    def front_config(self, name: str) -> str | None:
        """The configuration a front reads now (None: none written)."""

    def watch(self, shim_pid: int) -> None:
        """Watch an adopted shim (one nxrd did not start) for its exit."""
        return None

    def fds(self) -> list[int]:
        """Descriptors that turn readable when a workload's shim exits (the loop waits on them)."""
        return []

    def reap(self) -> None:
        """Collect finished helper processes (called every tick)."""
        return None  # nothing to collect unless the runtime forks helpers

    def ready(self, wl: WorkloadPlan, pid: int, spec: Workload) -> bool | None:
        """Whether the run of workload wl whose main process is pid passes spec.ready
        (True when it has none); None while a check is still under way. Never blocks."""
        return spec.ready is None
