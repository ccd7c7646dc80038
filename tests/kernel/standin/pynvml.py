"""A stand-in pynvml for the kernel tier: the unit tests' fake NVML with two GPUs, whose
compute processes are those the stand-in torch allocated memory for."""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nxr_standin_driver import held

from tests.unit.fake_nvml import FakeNVML, two_l4s


class StandIn(FakeNVML):
    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[types.SimpleNamespace]:
        return self._procs(held(self._gpu("nvmlDeviceGetComputeRunningProcesses", h).uuid))


sys.modules[__name__] = StandIn(two_l4s())
