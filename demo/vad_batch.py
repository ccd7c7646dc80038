"""A real batch inference job: Silero VAD (voice activity detection) over audio, on ONNX
Runtime, with the weights the `silero-vad` wheel ships (installed by scripts/setup.sh
without its dependencies: it declares torch, and only its model file is read).

Like demo/batch.py it runs one worker thread per CPU it is allowed onto, rechecked every
second, each with its own single-threaded session over its own stream of audio, and
appends "MONOTONIC CHUNKS THREADS" to --progress every half second: one chunk is 32 ms of
16 kHz audio scored for speech.

    python -m demo.vad_batch --progress /run/nxr-demo/batch.progress
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from demo.workers import keep_busy

RATE = 16000
CHUNK = 512  # samples per call at 16 kHz
CONTEXT = 64  # samples of the chunk before, which the model reads again


def model_path() -> Path:
    """The model in the installed wheel; its package is not imported (it needs torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed: bash scripts/setup.sh installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "data/silero_vad.onnx"


class Scorer:
    """One stream of audio through the model, chunk after chunk (its state carried)."""

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the job's threads are its parallelism
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT), np.float32)
        self.sr = np.array(RATE, np.int64)

    def score(self, chunk: Any) -> float:
        """The probability that this chunk (CHUNK samples in [-1, 1]) holds speech."""
        x = np.concatenate([self.context, chunk.reshape(1, CHUNK)], axis=1)
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
        self.context = x[:, -CONTEXT:]
        return float(out[0, 0])


def audio(seconds: float, seed: int) -> Any:
    """A synthetic recording: noise with tone bursts (the job's input; what it scores is
    beside the point, that it is the model's real work is the point)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = (np.sin(2 * np.pi * 0.5 * t) > 0).astype(np.float32)
    tone = np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    signal = 0.3 * voiced * tone + 0.02 * rng.standard_normal(t.size)
    usable = signal.size - signal.size % CHUNK
    return signal[:usable].astype(np.float32).reshape(-1, CHUNK)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--progress", required=True)
    ap.add_argument("--max-threads", type=int, default=64)
    args = ap.parse_args()

    def worker(i: int) -> Callable[[], int]:
        scorer, clip = Scorer(), audio(10.0, seed=i)

        def step() -> int:
            nonlocal clip
            for chunk in clip[:32]:
                scorer.score(chunk)
            clip = np.roll(clip, -32, axis=0)
            return 32  # chunks

        return step

    keep_busy(args.progress, args.max_threads, worker)


if __name__ == "__main__":
    main()
