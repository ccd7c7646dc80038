"""Readiness checks: one attempt each, with short timeouts, each on a thread of its own so
that a slow check never stalls the daemon's loop (every other workload and the controller)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from nxrd.profile.model import Ready

PROBE_TIMEOUT = 1.0  # seconds one attempt may take; ready.interval spaces the attempts


def check(ready: Ready) -> bool:
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
        try:
            done = subprocess.run(
                list(ready.exec),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=max(PROBE_TIMEOUT, ready.interval),
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0
    return True


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
        self, check: Callable[[Ready], bool] = check, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.check, self.clock = check, clock
        self.lock = threading.Lock()
        self.running: dict[str, float] = {}  # key -> when its attempt must have answered
        self.results: dict[str, bool] = {}

    def ask(self, key: str, ready: Ready) -> bool | None:
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
        worker = threading.Thread(target=self._run, args=(key, ready), name=key, daemon=True)
        worker.start()
        return None

    def _run(self, key: str, ready: Ready) -> None:
        try:
            ok = self.check(ready)
        except Exception:  # a check that raises is a check that failed
            ok = False
        with self.lock:
            due = self.running.pop(key, None)
            if due is not None and self.clock() <= due:
                self.results[key] = ok  # in time; a late answer is dropped
