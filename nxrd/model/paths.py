"""Where nxrd keeps what outlives it, for nxrd and for nxrctl reading it without nxrd."""

from __future__ import annotations

from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/nxr"


def log_file(state_dir: Path, workload: str) -> Path:
    """A workload's output, timestamped a line each (rotated to .1, .2, ...)."""
    return state_dir / "logs" / f"{workload}.log"


def status_file(state_dir: Path, workload: str) -> Path:
    """The shim's record of the workload it runs (pid, shim pid, exit)."""
    return state_dir / "run" / f"{workload}.json"


FRONT_CONFIG = "haproxy.cfg"  # in the front's own directory, its working directory
FRONT_SOCKET = "admin.sock"  # HAProxy's runtime API, beside it
FRONT_HELD = "held.map"  # priorities held back (empty on disk; filled through the API)


def front_dir(state_dir: Path, front: str) -> Path:
    """A front's directory: its HAProxy configuration and runtime API socket."""
    return state_dir / "fronts" / front
