"""A fake pynvml at the adapter boundary: GPUs described as data, errors raised as pynvml does.

Handles are GPU indices, and (index, slot) for MIG instances. Install it with
``monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(...))`` or pass it to the reader.
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any


class NVMLError(Exception):
    """pynvml's base error; str() is the driver's message."""


class NVMLError_NotSupported(NVMLError):  # pynvml's own names
    pass


class NVMLError_NotFound(NVMLError):
    pass


class NVMLError_FunctionNotFound(NVMLError):
    pass


class NVMLError_GpuIsLost(NVMLError):
    pass


class NVMLError_Timeout(NVMLError):
    pass


@dataclass
class FakeMig:
    uuid: str
    name: str
    memory: int


@dataclass
class FakeGpu:
    uuid: str
    bus_id: str
    name: str = "NVIDIA L4"
    memory: int = 24 << 30
    minor: int = 0
    compute_mode: int = 0  # nvmlComputeMode_t
    mig: tuple[int, int] = (0, 0)  # (current, pending)
    mig_slots: list[FakeMig | None] = field(default_factory=list)  # None: an empty slot
    compute: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (pid, timeStamp, smUtil)
    utilization: int = 0  # % of time a kernel ran
    unsupported: set[str] = field(default_factory=set)  # nvml function names: NotSupported
    lost: bool = False  # every query raises GpuIsLost
    xids: list[int] = field(default_factory=list)  # Xid events waiting to be read
    ecc_uncorrected: int | None = None  # volatile uncorrected ECC errors; None: no ECC


def two_l4s() -> list[FakeGpu]:
    return [FakeGpu("GPU-0", "00000000:41:00.0"), FakeGpu("GPU-1", "00000000:C1:00.0", minor=1)]


class FakeNVML(types.ModuleType):
    """Just enough of pynvml for discovery and accounting."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Timeout = NVMLError_Timeout
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, gpus: list[FakeGpu] | None = None, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.gpus = two_l4s() if gpus is None else gpus
        self.fail_init = fail_init
        self.inits = 0
        self.shutdown = False
        self.calls: list[tuple[str, Any]] = []
        self.timestamps: list[int] = []  # lastSeenTimeStamp of each process-utilization query
        # A call named in `hang` ("nvmlDeviceGetUUID"; "nvmlDeviceGetUUID:1" for GPU 1's
        # only; "*:1" for every call on GPU 1) blocks until `release` is set; `entered`
        # says it started.
        self.hang: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def _maybe_hang(self, name: str, index: int) -> None:
        if self.hang & {name, f"{name}:{index}", f"*:{index}"}:
            self.entered.set()
            self.release.wait()

    def _gpu(self, name: str, h: Any) -> FakeGpu:
        self.calls.append((name, h))
        index = h[0] if isinstance(h, tuple) else h
        self._maybe_hang(name, index)
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError_GpuIsLost("GPU is lost")
        if name in gpu.unsupported:
            raise NVMLError_NotSupported("Not Supported")
        return gpu

    def nvmlInit(self) -> None:
        self.calls.append(("nvmlInit", None))
        if "nvmlInit" in self.hang:
            self.entered.set()
            self.release.wait()
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetPciInfo(self, h: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(busId=self._gpu("nvmlDeviceGetPciInfo", h).bus_id.encode())

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        gpu = self._gpu("nvmlDeviceGetUUID", h)
        return self._mig(gpu, h).uuid if isinstance(h, tuple) else gpu.uuid

    def nvmlDeviceGetName(self, h: Any) -> bytes:
        gpu = self._gpu("nvmlDeviceGetName", h)
        return (self._mig(gpu, h).name if isinstance(h, tuple) else gpu.name).encode()

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> types.SimpleNamespace:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", h)
        total = self._mig(gpu, h).memory if isinstance(h, tuple) else gpu.memory
        return types.SimpleNamespace(total=total)

    def nvmlDeviceGetMinorNumber(self, h: int) -> int:
        return self._gpu("nvmlDeviceGetMinorNumber", h).minor

    def nvmlDeviceGetComputeMode(self, h: int) -> int:
        return self._gpu("nvmlDeviceGetComputeMode", h).compute_mode

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        return list(self._gpu("nvmlDeviceGetMigMode", h).mig)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: int) -> int:
        return len(self._gpu("nvmlDeviceGetMaxMigDeviceCount", h).mig_slots)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: int, slot: int) -> tuple[int, int]:
        if self._gpu("nvmlDeviceGetMigDeviceHandleByIndex", h).mig_slots[slot] is None:
            raise NVMLError_NotFound("Not Found")
        return (h, slot)

    @staticmethod
    def _mig(gpu: FakeGpu, h: tuple[int, int]) -> FakeMig:
        mig = gpu.mig_slots[h[1]]
        assert mig is not None
        return mig

    def _procs(self, procs: list[tuple[int, int | None]]) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in procs]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[types.SimpleNamespace]:
        return self._procs(self._gpu("nvmlDeviceGetComputeRunningProcesses", h).compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[types.SimpleNamespace]:
        return self._procs(self._gpu("nvmlDeviceGetGraphicsRunningProcesses", h).graphics)

    def nvmlDeviceGetProcessUtilization(self, h: int, last: int) -> list[types.SimpleNamespace]:
        gpu = self._gpu("nvmlDeviceGetProcessUtilization", h)
        self.timestamps.append(last)
        # NVML keeps a ring of recent samples and returns those newer than `last`.
        newer = [
            types.SimpleNamespace(pid=p, timeStamp=t, smUtil=sm, memUtil=0)
            for p, t, sm in gpu.samples
            if t > last
        ]
        if not newer:
            raise NVMLError_NotFound("Not Found")
        return newer

    def nvmlEventSetCreate(self) -> list[int]:
        return []  # the GPUs registered for Xid events

    def nvmlEventSetFree(self, events: list[int]) -> None:
        self.calls.append(("nvmlEventSetFree", list(events)))

    def nvmlDeviceRegisterEvents(self, h: int, types_: int, events: list[int]) -> None:
        self._gpu("nvmlDeviceRegisterEvents", h)
        assert types_ == 0x8  # nvmlEventTypeXidCriticalError
        events.append(h)

    def nvmlEventSetWait_v2(self, events: list[int], timeout_ms: int) -> types.SimpleNamespace:
        assert timeout_ms == 0  # nxrd never waits for events
        for h in events:
            self._maybe_hang("nvmlEventSetWait_v2", h)
            if self.gpus[h].xids:
                return types.SimpleNamespace(device=h, eventData=self.gpus[h].xids.pop(0))
        raise NVMLError_Timeout("Timeout")

    def nvmlDeviceGetTotalEccErrors(self, h: int, error_type: int, counter: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEccErrors", h)
        assert (error_type, counter) == (1, 0)  # uncorrected, volatile
        if gpu.ecc_uncorrected is None:
            raise NVMLError_NotSupported("Not Supported")
        return gpu.ecc_uncorrected

    def nvmlDeviceGetUtilizationRates(self, h: int) -> types.SimpleNamespace:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", h)
        return types.SimpleNamespace(gpu=gpu.utilization, memory=0)
