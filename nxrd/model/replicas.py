"""Names of replicas: a workload declared with `replicas = N` runs as NAME.0 ... NAME.N-1,
and one declared with `serve` has its request front NAME.front.

The dot cannot occur in a declared name (profile names are [a-z0-9_-]), so a replica's name
never collides with a workload's, and its group is read back from the name alone.
"""

from __future__ import annotations

SEPARATOR = "."
FRONT = "front"  # NAME.front: the request front of a served workload (docs/front.md)


def replica_name(group: str, index: int) -> str:
    return f"{group}{SEPARATOR}{index}"


def group_of(name: str) -> str:
    """The declared workload a name belongs to (itself when it is not a replica)."""
    return name.partition(SEPARATOR)[0]


def index_of(name: str) -> int | None:
    """The replica's index, or None for a workload without replicas (or a front)."""
    _, sep, index = name.partition(SEPARATOR)
    return int(index) if sep and index.isdigit() else None


def front_name(group: str) -> str:
    return f"{group}{SEPARATOR}{FRONT}"


def is_front(name: str) -> bool:
    return name.endswith(f"{SEPARATOR}{FRONT}")
