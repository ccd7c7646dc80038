"""nxrd for a benchmark run: its own profile, state directory and cgroup root, stopped on
the way out (bench/memory.py, bench/io_weight.py; run inside the test VM, as root)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def running(tmp: Path, text: str) -> Iterator[Path]:
    """Yields nxrd's cgroup root (/sys/fs/cgroup/nxr-bench-XXXXXX); SIGTERM on exit."""
    run = uuid.uuid4().hex[:6]
    root = Path(f"/sys/fs/cgroup/nxr-bench-{run}")
    profile = tmp / f"profile-{run}.toml"
    profile.write_text(text)
    argv = [str(BIN / "nxrd"), "--profile", str(profile), "--state-dir", str(tmp / f"state-{run}")]
    argv += ["--socket", str(tmp / "nxrd.sock"), "--cgroup-root", str(root)]
    log = tmp / f"nxrd-{run}.log"  # what it said, for a run that went wrong
    with log.open("w") as out:
        nxrd = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield root
    except BaseException:
        print(f"nxrd said (last lines of {log}):", *log.read_text().splitlines()[-15:], sep="\n")
        raise
    finally:
        nxrd.send_signal(signal.SIGTERM)
        nxrd.wait(timeout=120)
        subprocess.run(["rmdir", str(root)], check=False, stderr=subprocess.DEVNULL)
