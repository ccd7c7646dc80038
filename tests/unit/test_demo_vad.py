"""The demo's real batch job: Silero VAD from the silero-vad wheel scores audio chunk by
chunk, and the job reports the chunks it got through."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from demo.vad_batch import CHUNK, Scorer, audio


def test_the_pretrained_model_scores_tone_above_near_silence() -> None:
    scorer = Scorer()
    clip = audio(4.0, seed=1)
    scores = [scorer.score(chunk)[0] for chunk in clip]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert clip.shape[1] == CHUNK
    # the clip alternates 1 s of a voiced tone and 1 s of faint noise: each tone second
    # scores above the quiet second after it (a tone is not speech, so both stay low)
    n = len(scores) // 4
    mean = [sum(scores[k * n : (k + 1) * n]) / n for k in range(4)]
    assert mean[0] > mean[1] and mean[2] > mean[3], mean


def test_the_job_reports_chunks_scored_by_its_workers(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    job = subprocess.Popen(
        [sys.executable, "-m", "demo.vad_batch", "--progress", str(progress), "--max-workers", "1"]
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = progress.read_text().splitlines() if progress.exists() else []
            if len(lines) >= 2 and int(lines[-1].split()[1]) > int(lines[0].split()[1]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"no progress: {progress.read_text() if progress.exists() else ''}"
            )
        assert lines[-1].split()[2] == "1"  # workers
    finally:
        job.kill()
        job.wait()


def test_streams_scored_together_score_as_each_alone() -> None:
    clips = [audio(1.0, seed=s) for s in (1, 2, 3)]
    together, scorer = [], Scorer(3)
    for chunks in zip(*clips, strict=True):
        together.append(scorer.score(np.stack(chunks)))
    for k, clip in enumerate(clips):
        one = Scorer()
        alone = [one.score(chunk)[0] for chunk in clip]
        assert [t[k] for t in together] == pytest.approx(alone, abs=1e-4)
