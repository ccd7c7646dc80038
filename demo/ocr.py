"""A real pretrained model for the demo: PP-OCRv4's text recognizer on ONNX Runtime.

The weights ship inside the `rapidocr-onnxruntime` wheel (installed without its
dependencies by scripts/setup.sh: the demo needs only its model file, not OpenCV), so
nothing is downloaded at run time. One request = one line of text as an image in, its
text out: about 40 ms of CPU on one thread on the development machine.

ONNX Runtime's intra-op pool is sized from OMP_NUM_THREADS, one of the thread variables
nxr sets to the CPUs a workload was given (1 without it).
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEIGHT = 48  # the recognizer's input height
MIN_WIDTH = 320


def model_path() -> Path:
    """The recognizer in the installed wheel. Its package is not imported: its __init__
    needs OpenCV, which the demo does not install."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "rapidocr-onnxruntime is not installed: bash scripts/setup.sh installs it"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models/ch_PP-OCRv4_rec_infer.onnx"


def threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


class Recognizer:
    def __init__(self, intra_op: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op or threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        # index 0 is CTC's blank; the model's own alphabet, then a space
        self.chars = ["", *meta["character"].splitlines(), " "]
        self.input = self.session.get_inputs()[0].name

    def read(self, image: Image.Image) -> tuple[str, float]:
        """The text on one line of text, and the model's mean confidence in it."""
        logits = self.session.run(None, {self.input: _tensor(image)})[0][0]
        best, prob = logits.argmax(-1), logits.max(-1)
        keep = np.ones_like(best, dtype=bool)
        keep[1:] = best[1:] != best[:-1]  # CTC: repeats collapse, blanks drop
        keep &= best != 0
        text = "".join(self.chars[i] for i in best[keep])
        return text, float(prob[keep].mean()) if keep.any() else 0.0


def _tensor(image: Image.Image) -> Any:
    """PP-OCR's recognizer input: height 48 at the line's aspect ratio, at least 320 wide
    (padded right), channels first, scaled to [-1, 1]."""
    rgb = image.convert("RGB")
    width = max(1, round(HEIGHT * rgb.width / rgb.height))
    pixels = np.asarray(rgb.resize((width, HEIGHT), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((1, 3, HEIGHT, max(MIN_WIDTH, width)), np.float32)
    out[0, :, :, :width] = (pixels.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def render(text: str, size: int = 32) -> bytes:
    """One line of text as a PNG, as a client of the OCR server sends it."""
    font = ImageFont.load_default(size=size)
    width = int(font.getlength(text)) + 16
    image = Image.new("RGB", (width, HEIGHT), "white")
    ImageDraw.Draw(image).text((8, 6), text, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image
