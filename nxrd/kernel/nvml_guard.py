"""NVML calls from nxrd's loop, each on a worker thread that nxrd stops waiting for.

A wedged driver can block an NVML call for minutes or for ever (the thread sits in an ioctl
of /dev/nvidiactl and cannot be interrupted). nxrd's loop must keep supervising, so it
waits at most `timeout` seconds and reports the GPU as not answering. A stuck thread cannot
be killed; until it returns, further calls under the same key answer at once without
starting a thread, so a dead driver costs one thread per key, not one per tick.

Threads live only while a call runs: a call that returns in time is joined before the loop
goes on, so nxrd's forks of workload shims normally see a single-threaded process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from nxrd.errors import KernelError

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0  # seconds: NVML queries answer in milliseconds on a healthy driver


class NotAnswering(KernelError):
    """An NVML call did not return in time, or an earlier one under its key still hangs."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class Guard:
    """Runs calls on worker threads and gives up on them after `timeout` seconds."""

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout, self.clock = timeout, clock
        self._lock = threading.Lock()
        self._stuck: dict[str, float] = {}  # key -> when its hung call started

    def call(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), or NotAnswering; exceptions raised by fn reach the caller unchanged."""
        with self._lock:
            since = self._stuck.get(key)
        if since is not None:
            raise NotAnswering(
                key,
                f"GPU not answering: {key} has not returned for {self.clock() - since:.0f} s",
            )
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # handed to the caller, whatever it is
                box["error"] = e
            finally:
                # Under the lock: the caller either sees the call done or marks it stuck,
                # never both, so a late return always clears the mark.
                with self._lock:
                    done.set()
                    self._stuck.pop(key, None)

        started = self.clock()
        worker = threading.Thread(target=run, name=f"nvml: {key}", daemon=True)
        worker.start()
        if not done.wait(self.timeout):
            with self._lock:
                if not done.is_set():
                    self._stuck[key] = started
                    raise NotAnswering(
                        key, f"GPU not answering: {key} did not return within {self.timeout:g} s"
                    )
        worker.join()  # it has finished its work; only the thread's exit is left
        if "error" in box:
            raise box["error"]
        return cast(T, box["value"])

    def stuck(self) -> list[str]:
        """Keys whose call has not returned yet."""
        with self._lock:
            return sorted(self._stuck)
