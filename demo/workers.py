"""The demo's batch job's workers: one worker thread per CPU the job is allowed onto,
rechecked every second (so that it uses every core it is given, cores lent by nxr's
controller included, and idles the threads beyond them when its cpuset shrinks), and
"MONOTONIC DONE THREADS" appended to the progress file every half second."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable


def keep_busy(progress: str, max_threads: int, worker: Callable[[int], Callable[[], int]]) -> None:
    """Runs forever: thread i calls step = worker(i) once, then step() while i is under the
    allowed CPUs; each step returns the units of work it did."""
    done = [0]
    lock = threading.Lock()
    wanted = [0]

    def work(i: int) -> None:
        step = worker(i)
        while True:
            if i >= wanted[0]:
                time.sleep(0.2)
                continue
            n = step()
            with lock:
                done[0] += n

    workers: list[threading.Thread] = []
    with open(progress, "a", buffering=1) as out:
        while True:
            wanted[0] = min(max_threads, len(os.sched_getaffinity(0)))
            while len(workers) < wanted[0]:
                workers.append(threading.Thread(target=work, args=(len(workers),), daemon=True))
                workers[-1].start()
            for _ in range(2):
                time.sleep(0.5)
                out.write(f"{time.monotonic():.3f} {done[0]} {wanted[0]}\n")
