"""Real pretrained models for the demo, on ONNX Runtime: PP-OCRv4's text recognizer and
PP-OCR's text-line direction classifier (is a line upright or upside down).

The weights ship inside the `rapidocr-onnxruntime` wheel (installed without its
dependencies by scripts/setup.sh: the demo needs only its model files, not OpenCV), so
nothing is downloaded at run time. One request = one line of text as an image in; the
recognizer answers its text (about 22 ms of CPU on one thread on the development machine,
5.3 s in the emulated test VM), the classifier its direction (0.8 ms; 122 ms in the VM).

ONNX Runtime's intra-op pool is sized from OMP_NUM_THREADS, one of the thread variables
nxr sets to the CPUs a workload was given (without it, ONNX Runtime's default: a thread
per physical core of the host).
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from demo.sessions import session

HEIGHT = 48  # the recognizer's input height
MIN_WIDTH = 320


REC = "ch_PP-OCRv4_rec_infer.onnx"
CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
CLS_WIDTH = 192  # the classifier's input width: lines are cut or padded to it


def model_path(name: str = REC) -> Path:
    """A model in the installed wheel. Its package is not imported: its __init__ needs
    OpenCV, which the demo does not install."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "rapidocr-onnxruntime is not installed: bash scripts/setup.sh installs it"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


def threads() -> int:
    """OMP_NUM_THREADS, else 0: ONNX Runtime's own default, a thread per physical core."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _session(name: str, intra_op: int | None) -> Any:
    return session(model_path(name), threads() if intra_op is None else intra_op)


class Recognizer:
    def __init__(self, intra_op: int | None = None) -> None:
        self.session = _session(REC, intra_op)
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


class Orienter:
    """PP-OCR's direction classifier: the angle a line of text is at, 0 or 180 degrees."""

    def __init__(self, intra_op: int | None = None) -> None:
        self.session = _session(CLS, intra_op)
        self.input = self.session.get_inputs()[0].name

    def read(self, image: Image.Image) -> tuple[int, float]:
        """The line's angle and the model's confidence in it."""
        probs = self.session.run(None, {self.input: _tensor(image, CLS_WIDTH, CLS_WIDTH)})[0][0]
        best = int(probs.argmax())
        return (0, 180)[best], float(probs[best])


def _tensor(image: Image.Image, min_width: int = MIN_WIDTH, max_width: int | None = None) -> Any:
    """PP-OCR's input: height 48 at the line's aspect ratio, at least min_width wide
    (padded right), at most max_width (squeezed), channels first, scaled to [-1, 1]."""
    rgb = image.convert("RGB")
    width = max(1, round(HEIGHT * rgb.width / rgb.height))
    width = min(width, max_width or width)
    pixels = np.asarray(rgb.resize((width, HEIGHT), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((1, 3, HEIGHT, max(min_width, width)), np.float32)
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
