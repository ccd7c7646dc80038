"""Closed-loop CPU inference: forward passes back to back, with whatever BLAS thread pool
the environment sizes (OPENBLAS_NUM_THREADS, set by nxr; unset, OpenBLAS starts one thread
per CPU of the host). Appends "MONOTONIC_END SECONDS" per inference to --log.

    python -m demo.infer --log /run/nxr-threads/a.log [--rows 64]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", required=True)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()

    from demo.model import MLP

    model = MLP(args.width)
    x = model.batch(args.rows)
    with open(args.log, "a", buffering=1) as out:
        while True:
            t = time.monotonic()
            model(x)
            end = time.monotonic()
            out.write(f"{end:.4f} {end - t:.5f}\n")


if __name__ == "__main__":
    main()
