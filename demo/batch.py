"""The batch job: matrix products on as many worker threads as it has CPUs, rechecked every
second, so that it uses every core it is allowed onto (cores lent by nxr's controller
included) and gives them back when its cpuset shrinks. Appends "MONOTONIC BLOCKS THREADS" to
--progress every half second.

    python -m demo.batch --progress /run/nxr-demo/batch.progress
"""

from __future__ import annotations

import argparse
import os
import threading
import time

# Its own threads are its parallelism: one BLAS thread each (set before numpy starts).
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--progress", required=True)
    ap.add_argument("--size", type=int, default=160, help="matrix side of one block")
    ap.add_argument("--max-threads", type=int, default=64)
    args = ap.parse_args()

    import numpy as np

    rng = np.random.default_rng(2)
    a = rng.standard_normal((args.size, args.size), dtype=np.float32)
    blocks = [0]
    lock = threading.Lock()
    wanted = [0]

    def work(i: int) -> None:
        b = a.copy()
        while True:
            if i >= wanted[0]:
                time.sleep(0.2)
                continue
            b = np.tanh(a @ b)
            with lock:
                blocks[0] += 1

    workers: list[threading.Thread] = []
    with open(args.progress, "a", buffering=1) as out:
        while True:
            wanted[0] = min(args.max_threads, len(os.sched_getaffinity(0)))
            while len(workers) < wanted[0]:
                workers.append(threading.Thread(target=work, args=(len(workers),), daemon=True))
                workers[-1].start()
            for _ in range(2):
                time.sleep(0.5)
                out.write(f"{time.monotonic():.3f} {blocks[0]} {wanted[0]}\n")


if __name__ == "__main__":
    main()
