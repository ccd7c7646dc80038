"""Readiness checks: one attempt each, with short timeouts, each on a thread of its own so
that a slow check never stalls the daemon's loop (every other workload and the controller).

An exec check is the workload's own program, so it runs as the workload does: in its
cgroup, as its user and groups, with its environment and directory. Run as nxrd (root), a
health script the workload's user can edit would be that user's way to root."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nxrd.kernel.launch import Ids, become, join_cgroup
from nxrd.profile.model import Ready

PROBE_TIMEOUT = 1.0  # seconds one attempt may take; ready.interval spaces the attempts


@dataclass(frozen=True)
class Whose:
    """The workload an exec check runs as: None fields are nxrd's own."""

    cgroup_dir: Path | None = None
    env: dict[str, str] | None = None
    ids: Ids = (None, None, None)
    cwd: str | None = None

    def enter(self) -> None:
        """In the child, between fork and exec: the cgroup first (only root may move it),
        then the user."""
        if self.cgroup_dir is not None:
            join_cgroup(self.cgroup_dir)
        become(self.ids)
        os.umask(0o022)


NOBODY_ELSE = Whose()


def check(ready: Ready, whose: Whose = NOBODY_ELSE) -> bool:
    """Whether the workload answers its readiness check right now."""
    if ready.tcp is not None:
        host, _, port = ready.tcp.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT):
                return True
        except OSError:
            return False
    if ready.http is not None:
        try:
            with urllib.request.urlopen(ready.http, timeout=PROBE_TIMEOUT) as r:
                return bool(200 <= r.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            return False
    if ready.exec is not None:
        return _exec(list(ready.exec), whose, max(PROBE_TIMEOUT, ready.interval))
    return True


def _exec(argv: list[str], whose: Whose, timeout: float) -> bool:
    try:
        # preexec_fn only makes plain system calls (no locks, no imports), which is what
        # makes it safe to fork from this thread while others run.
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=whose.env,
            cwd=whose.cwd,
            start_new_session=True,  # its own process group: a timeout kills what it forked
            preexec_fn=whose.enter,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    try:
        return child.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return False


def deadline(ready: Ready) -> float:
    """How long one attempt may take in all: a check still running past it has failed."""
    return max(PROBE_TIMEOUT, ready.interval) if ready.exec is not None else PROBE_TIMEOUT


class Prober:
    """Checks run on threads; the loop asks for a result and never waits for one.

    At most one check runs per run of a workload: one still running past its deadline (a
    server that drips its answer) counts as failed each time it is asked about, and its
    late answer is dropped.
    """

    def __init__(
        self,
        check: Callable[[Ready, Whose], bool] = check,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.check, self.clock = check, clock
        self.lock = threading.Lock()
        self.running: dict[str, float] = {}  # key -> when its attempt must have answered
        self.results: dict[str, bool] = {}

    def ask(self, key: str, ready: Ready, whose: Whose = NOBODY_ELSE) -> bool | None:
        """The finished check's answer for key (one run of one workload), once; None while
        one runs, and then a new attempt is started if none is under way."""
        with self.lock:
            if key in self.results:
                return self.results.pop(key)
            if key in self.running:
                return False if self.clock() > self.running[key] else None
            self.running[key] = self.clock() + deadline(ready)
            # answers for an earlier run of the same workload ("name/pid") are stale
            name = key.rpartition("/")[0] + "/"
            for old in [k for k in self.results if k.startswith(name)]:
                del self.results[old]
        worker = threading.Thread(target=self._run, args=(key, ready, whose), name=key, daemon=True)
        worker.start()
        return None

    def _run(self, key: str, ready: Ready, whose: Whose) -> None:
        try:
            ok = self.check(ready, whose)
        except Exception:  # a check that raises is a check that failed
            ok = False
        with self.lock:
            due = self.running.pop(key, None)
            if due is not None and self.clock() <= due:
                self.results[key] = ok  # in time; a late answer is dropped
