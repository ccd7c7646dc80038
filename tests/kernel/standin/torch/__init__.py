"""A stand-in for the few PyTorch calls scripts/gpu_check.py makes, on the stand-in driver.

Like CUDA, it sees the GPUs CUDA_VISIBLE_DEVICES names (by UUID), up to the first it does
not know, or every GPU when the variable is unset.
"""

from __future__ import annotations

import os
import types

from nxr_standin_driver import UUIDS, hold

uint8 = "uint8"


def _visible() -> list[str]:
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    if names is None:
        return list(UUIDS)
    out = []
    for name in names.split(","):
        if name not in UUIDS:
            break
        out.append(name)
    return out


def empty(n: int, dtype: object = None, device: str = "cpu") -> bytes:
    if device.startswith("cuda"):
        visible = _visible()
        if not visible:
            raise RuntimeError("No CUDA GPUs are available")
        hold(visible[0], n)
    return b""


cuda = types.SimpleNamespace(
    device_count=lambda: len(_visible()),
    # torch's uuid prints without the "GPU-" that NVML and CUDA_VISIBLE_DEVICES use
    get_device_properties=lambda i: types.SimpleNamespace(uuid=_visible()[i][len("GPU-") :]),
    synchronize=lambda: None,
)
