"""Start a process inside a cgroup before it runs a single instruction of its program."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from nxrd.errors import KernelError


def spawn_in_cgroup(
    argv: Sequence[str],
    cgroup_dir: str | Path,
    env: Mapping[str, str] | None = None,
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Fork, join cgroup_dir in the child, then exec: no window runs outside the limits."""
    procs = os.path.join(str(cgroup_dir), "cgroup.procs")
    if not os.path.exists(procs):
        raise KernelError(f"cannot start {argv[0]}: no cgroup at {cgroup_dir}")

    def join() -> None:
        # Runs in the child between fork and exec; "0" means the writing process itself.
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    try:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            list(argv),
            env=dict(env) if env is not None else None,
            preexec_fn=join,
            stdin=subprocess.DEVNULL,
            **popen,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelError(f"cannot start {argv[0]} in {cgroup_dir}: {e}") from None
