"""The batch job: matrix products on as many worker threads as it has CPUs, rechecked every
second, so that it uses every core it is allowed onto (cores lent by nxr's controller
included) and gives them back when its cpuset shrinks. Appends "MONOTONIC BLOCKS THREADS" to
--progress every half second.

    python -m demo.batch --progress /run/nxr-demo/batch.progress
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from demo.workers import keep_busy

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

    def worker(i: int) -> Callable[[], int]:
        b = a.copy()

        def step() -> int:
            nonlocal b
            b = np.tanh(a @ b)
            return 1  # one block

        return step

    keep_busy(args.progress, args.max_threads, worker)


if __name__ == "__main__":
    main()
