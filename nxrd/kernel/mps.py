"""NVIDIA MPS control daemons: one per GPU shared under MPS, run and stopped by nxrd.

Each runs in the foreground (`nvidia-cuda-mps-control -f`) as nxrd's child, so nxrd knows
its PID, sees it exit and starts it again; its GPU is its only visible device, and its pipe
and log directories are the ones the planner gives that GPU's clients
(CUDA_MPS_PIPE_DIRECTORY). Stopped with the control client's `quit`, then SIGTERM, by PID.
One still running from an nxrd that exited leaving its workloads running (on_stop = leave;
their CUDA contexts live in its MPS server) is adopted through the PID file it keeps in its
pipe directory, not started twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nxrd.errors import KernelError
from nxrd.files import shared_dir
from nxrd.model.plan import mps_dirs

CONTROL = "nvidia-cuda-mps-control"


class MpsDaemons:
    def __init__(
        self,
        say: Callable[[str], None],
        program: str = CONTROL,
        dirs: Callable[[str], tuple[str, str]] = mps_dirs,  # tests use a temporary root
    ) -> None:
        self.say, self.program, self.dirs = say, program, dirs
        self.procs: dict[str, subprocess.Popen[bytes] | int] = {}  # GPU UUID -> child or PID

    def _env(self, uuid: str) -> dict[str, str]:
        pipe, log = self.dirs(uuid)
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CUDA_VISIBLE_DEVICES": uuid,
            "CUDA_MPS_PIPE_DIRECTORY": pipe,
            "CUDA_MPS_LOG_DIRECTORY": log,
        }

    def ensure(self, uuids: list[str]) -> None:
        """Run a control daemon for each of these GPUs (and none for others)."""
        for uuid in sorted(set(self.procs) - set(uuids)):
            self._stop(uuid)
        for uuid in uuids:
            proc = self.procs.get(uuid)
            if proc is not None and _alive(proc):
                continue
            if proc is not None:
                self.say(f"MPS control daemon for {uuid} exited: started again")
            self.procs[uuid] = self._adopt(uuid) or self._start(uuid)

    def _adopt(self, uuid: str) -> int | None:
        pipe, _ = self.dirs(uuid)
        try:
            pid = int((Path(pipe) / "nvidia-cuda-mps-control.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        self.say(f"MPS control daemon for {uuid} already running (pid {pid}): adopted")
        return pid

    def _start(self, uuid: str) -> subprocess.Popen[bytes]:
        path = shutil.which(self.program)
        if path is None:
            raise KernelError(
                f"[host] mps: {self.program} not found (install the NVIDIA compute utilities, "
                "or set mps = false)"
            )
        env = self._env(uuid)
        for d in (env["CUDA_MPS_PIPE_DIRECTORY"], env["CUDA_MPS_LOG_DIRECTORY"]):
            shared_dir(Path(d))  # the workloads, as their users, reach the pipes
        try:
            return subprocess.Popen(
                [path, "-f"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to nxrd's terminal is nxrd's to handle
            )
        except OSError as e:
            raise KernelError(f"[host] mps: cannot start {path}: {e.strerror}") from None

    def _stop(self, uuid: str, timeout: float = 5.0) -> None:
        proc = self.procs.pop(uuid)
        if not _alive(proc):
            return
        # `quit` lets it stop its servers cleanly; SIGTERM, then SIGKILL, if it does not.
        path = shutil.which(self.program)
        if path is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [path], input=b"quit\n", env=self._env(uuid), timeout=timeout, check=False
                )
        for sig in (signal.SIGTERM, signal.SIGKILL, None):
            if _gone_within(proc, timeout):
                return
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc if isinstance(proc, int) else proc.pid, sig)

    def close(self) -> None:
        for uuid in sorted(self.procs):
            self._stop(uuid)


def _alive(proc: subprocess.Popen[bytes] | int) -> bool:
    if not isinstance(proc, int):
        return proc.poll() is None
    try:
        os.kill(proc, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, but alive
    return True


def _gone_within(proc: subprocess.Popen[bytes] | int, timeout: float) -> bool:
    if not isinstance(proc, int):
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _alive(proc):  # not our child: nothing to wait on but the PID
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
