"""NVML calls from nxrd's loop, each on a worker thread that nxrd stops waiting for.

A wedged driver can block an NVML call for minutes or for ever (the thread sits in an ioctl
of /dev/nvidiactl and cannot be interrupted). nxrd's loop must keep supervising, so it
waits at most `timeout` seconds and reports the GPU as not answering. A stuck thread cannot
be killed; until it returns, further calls under the same key answer at once without
starting a thread, so a dead driver costs one thread per key (nxrd's poll uses one per GPU),
not one per tick.

Threads live only while a call runs: a call that returns in time is joined before the loop
goes on, so nxrd's forks of workload shims normally see a single-threaded process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from nxrd.errors import KernelError

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0  # seconds: NVML queries answer in milliseconds on a healthy driver


class NotAnswering(KernelError):
    """An NVML call did not return in time, or an earlier one under its key still hangs."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass
class _Running:
    """One call on its worker thread."""

    key: str
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    box: dict[str, Any] = field(default_factory=dict)  # "value" or "error", once done
    worker: threading.Thread | None = None


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
        return cast(T, self._result(self._start(key, fn, args), self.timeout))

    def call_each(self, calls: Sequence[tuple[str, Callable[[], Any]]]) -> list[Any]:
        """Each call on its own worker thread, all waited for together, `timeout` in all.

        Per call, in order: what it returned, or the exception it raised (NotAnswering if
        it did not return in time, or an earlier call under its key still hangs). One call
        that hangs costs the others nothing, and the loop waits one timeout, not one each.
        """
        started: list[_Running | NotAnswering] = []
        for key, fn in calls:
            try:
                started.append(self._start(key, fn, ()))
            except NotAnswering as e:
                started.append(e)
        deadline = time.monotonic() + self.timeout
        out: list[Any] = []
        for run in started:
            if isinstance(run, NotAnswering):
                out.append(run)
                continue
            try:
                out.append(self._result(run, max(0.0, deadline - time.monotonic())))
            except Exception as e:  # the caller sorts hangs from failures
                out.append(e)
        return out

    def _start(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> _Running:
        with self._lock:
            since = self._stuck.get(key)
        if since is not None:
            raise NotAnswering(
                key,
                f"GPU not answering: {key} has not returned for {self.clock() - since:.0f} s",
            )
        run = _Running(key, self.clock())

        def work() -> None:
            try:
                run.box["value"] = fn(*args)
            except BaseException as e:  # handed to the caller, whatever it is
                run.box["error"] = e
            finally:
                # Under the lock: the caller either sees the call done or marks it stuck,
                # never both, so a late return always clears the mark.
                with self._lock:
                    run.done.set()
                    self._stuck.pop(key, None)

        run.worker = threading.Thread(target=work, name=f"nvml: {key}", daemon=True)
        run.worker.start()
        return run

    def _result(self, run: _Running, timeout: float) -> Any:
        if not run.done.wait(timeout):
            with self._lock:
                if not run.done.is_set():
                    self._stuck[run.key] = run.started
                    raise NotAnswering(
                        run.key,
                        f"GPU not answering: {run.key} did not return within {self.timeout:g} s",
                    )
        assert run.worker is not None
        run.worker.join()  # it has finished its work; only the thread's exit is left
        if "error" in run.box:
            raise run.box["error"]
        return run.box["value"]

    def stuck(self) -> list[str]:
        """Keys whose call has not returned yet."""
        with self._lock:
            return sorted(self._stuck)
