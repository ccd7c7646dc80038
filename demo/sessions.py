"""An ONNX Runtime session on the CPU, as the demo's models run: an intra-op pool of the
size given, no inter-op parallelism (one graph at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def session(path: Path, intra_op: int) -> Any:
    """intra_op 0 is ONNX Runtime's own default, a thread per physical core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
