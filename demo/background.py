"""The background indexer: single-threaded sorting and hashing of vectors, never in a hurry.
Appends "MONOTONIC ITEMS" to --progress every second.

    python -m demo.background --progress /run/nxr-demo/background.progress
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--progress", required=True)
    args = ap.parse_args()

    import numpy as np

    rng = np.random.default_rng(3)
    items, next_write = 0, time.monotonic() + 1.0
    with open(args.progress, "a", buffering=1) as out:
        while True:
            v = rng.standard_normal(4096).astype(np.float32)
            hashlib.sha256(np.sort(v).tobytes()).digest()
            items += 1
            if time.monotonic() >= next_write:
                out.write(f"{time.monotonic():.3f} {items}\n")
                next_write += 1.0


if __name__ == "__main__":
    main()
