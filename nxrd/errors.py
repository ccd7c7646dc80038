"""One exception tree for nxr. Every message is a sentence a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


class NxrError(Exception):
    """Base of every error nxr reports to a user (one line, no traceback)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a profile: where (dotted field) and what."""

    field: str
    message: str

    def render(self, source: str | None = None) -> str:
        where = f"{self.field}: " if self.field else ""
        prefix = f"{source}: " if source else ""
        return f"{prefix}{where}{self.message}"


class ProfileError(NxrError):
    """A profile is invalid; carries every problem found in it at once."""

    def __init__(self, source: str | None, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [p.render(self.source) for p in self.problems]


class PlanError(ProfileError):
    """A valid profile does not fit the host (cores, memory, GPUs)."""


class TopologyError(NxrError):
    """A captured topology file cannot be read, or nxrd's cgroup leaves nothing to plan on."""


class KernelError(NxrError):
    """A kernel interface (cgroupfs, /proc, NVML) refused or failed an operation."""
