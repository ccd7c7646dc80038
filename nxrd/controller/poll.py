"""HTTP GETs for the prometheus and probe latency sources, each URL on a thread of its own
so that a slow or hung endpoint never stalls nxrd's loop. The threads only fetch; results
go to a queue that the loop drains, and all decisions stay on the loop's thread."""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Fetched:
    workload: str
    at: float  # monotonic time the request was sent
    seconds: float  # how long until the whole body came back (or the failure)
    body: str | None  # None: failed
    error: str | None = None
    timed_out: bool = False


class Poller:
    def __init__(
        self, workload: str, url: str, interval: float, timeout: float, out: queue.Queue[Fetched]
    ) -> None:
        self.workload, self.url, self.interval, self.timeout, self.out = (
            workload,
            url,
            interval,
            timeout,
            out,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"poll-{workload}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            self.out.put(self.fetch())
            due = max(due + self.interval, time.monotonic())
            self.stop.wait(max(0.0, due - time.monotonic()))

    def fetch(self) -> Fetched:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as r:
                body = r.read(16 << 20).decode("utf-8", "replace")
            return Fetched(self.workload, start, time.monotonic() - start, body)
        except urllib.error.HTTPError as e:
            why, late = f"HTTP {e.code} from {self.url}", False
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            why, late = f"{self.url}: {reason}", isinstance(reason, TimeoutError)
        return Fetched(self.workload, start, time.monotonic() - start, None, why, late)

    def close(self) -> None:
        self.stop.set()
