"""A real batch inference job: Silero VAD (voice activity detection) over audio, on ONNX
Runtime, with the weights the `silero-vad` wheel ships (installed by scripts/setup.sh
without its dependencies: it declares torch, and only its model file is read).

It runs one worker process per CPU it is allowed onto (demo/workers.py), rechecked every
second, each with its own single-threaded session over its own STREAMS streams of audio,
scored together, a chunk of each per call (a batch), and appends "MONOTONIC CHUNKS
WORKERS" to --progress every half second: one chunk is 32 ms of 16 kHz audio scored for
speech.

    python -m demo.vad_batch --progress /run/nxr-demo/batch.progress
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from demo.sessions import session
from demo.workers import keep_busy

RATE = 16000
CHUNK = 512  # samples per call at 16 kHz
CONTEXT = 64  # samples of the chunk before, which the model reads again
STREAMS = 8  # streams a worker scores together


def model_path() -> Path:
    """The model in the installed wheel; its package is not imported (it needs torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed: bash scripts/setup.sh installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "data/silero_vad.onnx"


class Scorer:
    """Streams of audio through the model together, a chunk of each per call (their states
    carried): batched, as batch inference runs, so that the model's work dominates the
    Python around each call."""

    def __init__(self, streams: int = 1) -> None:
        # one thread: the job's worker processes are its parallelism
        self.session = session(model_path(), 1)
        self.state = np.zeros((2, streams, 128), np.float32)
        self.context = np.zeros((streams, CONTEXT), np.float32)
        self.sr = np.array(RATE, np.int64)

    def score(self, chunks: Any) -> list[float]:
        """The probability that each stream's next chunk (CHUNK samples in [-1, 1]) holds
        speech."""
        x = np.concatenate([self.context, chunks.reshape(len(self.context), CHUNK)], axis=1)
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
        self.context = x[:, -CONTEXT:]
        return [float(v) for v in out[:, 0]]


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
    ap.add_argument("--max-workers", type=int, default=64)
    args = ap.parse_args()

    def worker(i: int) -> Callable[[], int]:
        scorer = Scorer(STREAMS)
        clips = np.stack([audio(10.0, seed=STREAMS * i + k) for k in range(STREAMS)], axis=1)

        def step() -> int:
            nonlocal clips
            for chunks in clips[:4]:
                scorer.score(chunks)
            clips = np.roll(clips, -4, axis=0)
            return 4 * STREAMS  # chunks

        return step

    keep_busy(args.progress, args.max_workers, worker)


if __name__ == "__main__":
    main()
