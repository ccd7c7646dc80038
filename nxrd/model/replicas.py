"""Names of replicas: a workload declared with `replicas = N` runs as NAME.0 ... NAME.N-1.

The dot cannot occur in a declared name (profile names are [a-z0-9_-]), so a replica's name
never collides with a workload's, and its group is read back from the name alone.
"""

from __future__ import annotations

SEPARATOR = "."


def replica_name(group: str, index: int) -> str:
    return f"{group}{SEPARATOR}{index}"


def group_of(name: str) -> str:
    """The declared workload a name belongs to (itself when it is not a replica)."""
    return name.partition(SEPARATOR)[0]


def index_of(name: str) -> int | None:
    """The replica's index, or None for a workload without replicas."""
    _, sep, index = name.partition(SEPARATOR)
    return int(index) if sep else None
