"""Start a process inside a cgroup before it runs a single instruction of its program."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.kernel.launch import join_cgroup


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

    try:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            list(argv),
            env=dict(env) if env is not None else None,
            preexec_fn=lambda: join_cgroup(cgroup_dir),
            stdin=subprocess.DEVNULL,
            **popen,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelError(f"cannot start {argv[0]} in {cgroup_dir}: {e}") from None
