"""The demo's batch job's workers: one worker process per CPU the job is allowed onto,
rechecked every second (so that it uses every core it is given, cores lent by nxr's
controller included, and idles the workers beyond them when its cpuset shrinks), and
"MONOTONIC DONE WORKERS" appended to the progress file every half second, from when the
first workers are set up (loading a model takes seconds in the emulated test VM: counted,
it would lower the job's measured capacity alone).

Processes, not threads: in the emulated test VM two threads of one process scoring with
ONNX Runtime did 76 chunks/s together, against 107 for one thread alone and 199 for two
processes (2026-12-07), and the batch job's capacity alone would have been measured at
less per CPU than it does on one CPU beside the server."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # prctl(2)


def keep_busy(progress: str, max_workers: int, worker: Callable[[int], Callable[[], int]]) -> None:
    """Runs forever: process i calls step = worker(i) once, then step() while i is under
    the allowed CPUs; each step returns the units of work it did. The workers are forked
    (worker need not be picklable) and die with this process."""
    ctx = multiprocessing.get_context("fork")
    done = ctx.Value("q", 0)  # shared, with a lock
    wanted = ctx.Value("i", 0, lock=False)
    ready = ctx.Value("i", 0)  # workers past their set-up (seconds, emulated)

    parent = os.getpid()

    def work(i: int) -> None:
        # killed with the job, however it dies (a SIGKILL leaves no time to stop workers)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before that was set
            return
        step = worker(i)
        with ready.get_lock():
            ready.value += 1
        while True:
            if i >= wanted.value:
                time.sleep(0.2)
                continue
            n = step()
            with done.get_lock():
                done.value += n

    workers: list[multiprocessing.process.BaseProcess] = []
    started = False
    with open(progress, "a", buffering=1) as out:
        while True:
            wanted.value = min(max_workers, len(os.sched_getaffinity(0)))
            while len(workers) < wanted.value:
                workers.append(ctx.Process(target=work, args=(len(workers),), daemon=True))
                workers[-1].start()
            if not started:  # the first line says the job is working, not setting up
                started = ready.value >= wanted.value
                if not started:
                    time.sleep(0.1)
                    continue
            for _ in range(2):
                time.sleep(0.5)
                out.write(f"{time.monotonic():.3f} {done.value} {wanted.value}\n")
