"""A small CPU inference model: a three-layer MLP in float32, evaluated with numpy, so its
matrix products run on OpenBLAS's thread pool (sized by OPENBLAS_NUM_THREADS, which nxr
sets to the CPUs a workload got)."""

from __future__ import annotations

import numpy as np


class MLP:
    def __init__(self, width: int = 256, depth: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(width)
        self.layers = [
            (rng.standard_normal((width, width), dtype=np.float32) * scale).astype(np.float32)
            for _ in range(depth)
        ]
        self.width = width

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for w in self.layers:
            x = np.maximum(x @ w, 0.0)
        return x

    def batch(self, rows: int, seed: int = 1) -> np.ndarray:
        """A batch of `rows` inputs (a request's tokens or items)."""
        rng = np.random.default_rng(seed)
        return rng.standard_normal((rows, self.width), dtype=np.float32)
