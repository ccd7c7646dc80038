"""Who uses how much of each GPU: NVML's per-process figures, attributed to workloads.

UsageReader is the NVML side: one session for nxrd's lifetime, every call through the
guard. attribute() and the document builders after it are pure: readings and a PID ->
workload mapping in, figures out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from nxrd.errors import KernelError
from nxrd.kernel.gpu import UNSUPPORTED, is_error, nvml_text, optional
from nxrd.kernel.nvml_guard import Guard, NotAnswering
from nxrd.model.topology import Gpu

# nvml.h: nvmlEventTypeXidCriticalError, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC
XID_CRITICAL = 0x8
ECC_UNCORRECTED = 1
ECC_VOLATILE = 0


@dataclass(frozen=True)
class ProcessUse:
    """One process with a context on a GPU."""

    pid: int
    memory: int | None  # bytes; None where the driver does not say (MIG without privileges)
    sm_percent: float | None  # mean SM utilization since the last poll; None: not sampled


@dataclass(frozen=True)
class GpuReading:
    """One poll of one GPU."""

    index: int
    uuid: str
    processes: tuple[ProcessUse, ...] = ()
    utilization: float | None = None  # the whole GPU: % of the time a kernel ran
    per_process: bool = False  # whether this GPU samples per-process utilization
    error: str | None = None  # why it has no figures
    xids: tuple[int, ...] = ()  # Xid errors the driver reported since the previous poll
    ecc_uncorrected: int | None = None  # volatile uncorrected ECC count; None: no ECC


class UsageReader:
    """Per-GPU processes, their memory and SM utilization, and the GPU's own utilization."""

    def __init__(self, gpus: Sequence[Gpu], guard: Guard, nvml: Any = None) -> None:
        self.gpus, self.guard, self._nvml = list(gpus), guard, nvml
        self._initialized = False
        self._handles: list[tuple[Gpu, Any]] | None = None
        # NVML returns the samples newer than the timestamp it is given: each poll passes
        # the newest one it saw, so a sample is counted once.
        self._last_seen: dict[str, int] = {}
        self._unsampled: set[str] = set()  # GPUs that refused per-process utilization
        self._events: dict[str, Any] = {}  # GPU UUID -> NVML event set of its critical Xids
        # GPU UUID -> Xids drained, not yet in a reading (a worker thread may add late ones)
        self._xids_seen: dict[str, list[int]] = {}

    def read(self) -> list[GpuReading]:
        """One reading per GPU; KernelError when NVML is not there, NotAnswering when its
        init hangs. Each GPU is asked on its own thread: one whose query hangs reads as not
        answering (an error), and the others are read as usual."""
        if self._handles is None:
            # A late return of a hung init still sets the handles: the next poll uses them.
            self.guard.call("nvmlInit", self._open)
        assert self._handles is not None
        handles = self._handles
        readings = self.guard.call_each(
            [(f"the query of GPU {g.index}", partial(self._read_one, g, h)) for g, h in handles]
        )
        for got in readings:
            if isinstance(got, Exception) and not isinstance(got, NotAnswering):
                raise got  # a fault of nxrd's, not the driver's: before any Xid is taken
        out = []
        for (g, _), got in zip(handles, readings, strict=True):
            # Xids drained by a query that then hung are kept: they say why it hangs.
            xids = tuple(self._xids_seen.pop(g.uuid, ()))
            if isinstance(got, NotAnswering):
                out.append(GpuReading(g.index, g.uuid, error=str(got), xids=xids))
            else:
                out.append(replace(got, xids=xids))
        return out

    def _open(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                raise KernelError("nvidia-ml-py (pynvml) is not installed") from None
            self._nvml = pynvml
        nvml = self._nvml
        try:
            if not self._initialized:
                nvml.nvmlInit()  # once: nvmlInit counts references, and nxrd keeps its session
                self._initialized = True
            handles = [(g, nvml.nvmlDeviceGetHandleByIndex(g.index)) for g in self.gpus]
            self._events = self._watch_xids(handles)
            self._handles = handles
        except nvml.NVMLError as e:
            raise KernelError(f"NVML unavailable: {nvml_text(e)}") from None
        except OSError as e:  # libnvidia-ml.so gone
            raise KernelError(f"NVML unavailable: {e}") from None

    def _watch_xids(self, handles: list[tuple[Gpu, Any]]) -> dict[str, Any]:
        """Per GPU that can report them, an event set receiving its critical Xid errors.

        One set per GPU, drained by that GPU's own query: an event names its device by a
        handle, and asking a wedged GPU which one it is would hang every GPU's Xids.
        """
        nvml = self._nvml
        out = {}
        for g, h in handles:
            # A GPU that cannot register (unsupported, or already lost) still gets its
            # other queries; its own reading says when it is gone.
            with contextlib.suppress(nvml.NVMLError):
                events = optional(nvml, nvml.nvmlEventSetCreate)
                if events is None:
                    break  # this NVML has no events at all
                try:
                    nvml.nvmlDeviceRegisterEvents(h, XID_CRITICAL, events)
                except nvml.NVMLError:
                    nvml.nvmlEventSetFree(events)
                    raise
                out[g.uuid] = events
        return out

    def _drain_xids(self, uuid: str) -> None:
        """Xids waiting in the GPU's event set into _xids_seen (never waits: timeout 0)."""
        nvml = self._nvml
        events = self._events.get(uuid)
        while events is not None:
            try:
                xid = int(nvml.nvmlEventSetWait_v2(events, 0).eventData)
            except nvml.NVMLError:
                break  # Timeout: drained. Anything else: a lost GPU says so in its reading
            self._xids_seen.setdefault(uuid, []).append(xid)

    def _read_one(self, gpu: Gpu, h: Any) -> GpuReading:
        nvml = self._nvml
        # First, and kept however the rest goes: a GPU falling off the bus says why (Xid 79).
        self._drain_xids(gpu.uuid)
        try:
            uuid = nvml_text(nvml.nvmlDeviceGetUUID(h))
            if uuid != gpu.uuid:  # never attribute one GPU's figures to another
                return GpuReading(gpu.index, gpu.uuid, error=f"GPU {gpu.index} is now {uuid}")
            memory = self._memory_by_pid(h)
            rates = optional(nvml, nvml.nvmlDeviceGetUtilizationRates, h)
            sm = self._sm_by_pid(gpu.uuid, h)
            ecc = optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, h, ECC_UNCORRECTED, ECC_VOLATILE)
        except nvml.NVMLError as e:
            return GpuReading(gpu.index, gpu.uuid, error=f"NVML: {nvml_text(e)}")
        procs = tuple(
            ProcessUse(pid, mem, None if sm is None else sm.get(pid, 0.0))
            for pid, mem in sorted(memory.items())
        )
        return GpuReading(
            gpu.index,
            gpu.uuid,
            procs,
            utilization=None if rates is None else float(rates.gpu),
            per_process=sm is not None,
            ecc_uncorrected=None if ecc is None else int(ecc),
        )

    def _memory_by_pid(self, h: Any) -> dict[int, int | None]:
        """Compute and graphics contexts; a process with both is counted once."""
        nvml = self._nvml
        out: dict[int, int | None] = {}
        for query in (
            nvml.nvmlDeviceGetComputeRunningProcesses,
            nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            for p in optional(nvml, query, h) or []:
                pid = int(p.pid)
                used = None if p.usedGpuMemory is None else int(p.usedGpuMemory)
                known = [m for m in (out.get(pid), used) if m is not None]
                out[pid] = max(known) if known else None
        return out

    def _sm_by_pid(self, uuid: str, h: Any) -> dict[int, float] | None:
        """Mean SM % per PID over the samples since the last poll; None: not sampled here."""
        nvml = self._nvml
        if uuid in self._unsampled:
            return None
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(h, self._last_seen.get(uuid, 0))
        except nvml.NVMLError as e:
            # NotFound: no process ran a kernel since then. Some pynvml versions raise
            # NVMLError(NVML_SUCCESS) for an empty buffer; that means the same.
            if is_error(nvml, e, "NotFound") or getattr(e, "value", None) == 0:
                return {}
            if is_error(nvml, e, *UNSUPPORTED):
                self._unsampled.add(uuid)  # MIG mode, older GPUs: it will not start to
                return None
            raise
        seen = self._last_seen.get(uuid, 0)
        per_pid: dict[int, list[float]] = {}
        for s in samples:
            if int(s.timeStamp) <= seen:
                continue
            per_pid.setdefault(int(s.pid), []).append(float(s.smUtil))
            self._last_seen[uuid] = max(self._last_seen.get(uuid, 0), int(s.timeStamp))
        return {pid: sum(v) / len(v) for pid, v in per_pid.items()}


# -- attribution (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """What one workload, or everything outside the workloads, uses of one GPU."""

    memory: int | None  # bytes its processes hold; None: the driver gave no figure
    sm_percent: float | None  # its processes' SM utilization, summed; None: not sampled
    pids: tuple[int, ...]


@dataclass(frozen=True)
class Attribution:
    workloads: dict[str, dict[int, Use]]  # workload -> GPU index -> use
    other: dict[int, Use]  # GPU index -> use by processes of no workload
    gpus: dict[int, GpuReading]  # GPU index -> its reading (device utilization, errors)


def _use(procs: Sequence[ProcessUse], sampled: bool) -> Use:
    known = [p.memory for p in procs if p.memory is not None]
    return Use(
        memory=sum(known) if known else None,
        sm_percent=sum(p.sm_percent or 0.0 for p in procs) if sampled else None,
        pids=tuple(sorted(p.pid for p in procs)),
    )


def attribute(readings: Sequence[GpuReading], owner: Mapping[int, str | None]) -> Attribution:
    """Sum each GPU's per-process figures by workload; PIDs of no workload count as other.

    Where a GPU does not sample per-process utilization but all its processes belong to
    one workload, that workload's utilization is the GPU's own.
    """
    workloads: dict[str, dict[int, Use]] = {}
    other: dict[int, Use] = {}
    for r in readings:
        if r.error is not None:
            continue
        groups: dict[str | None, list[ProcessUse]] = {}
        for p in r.processes:
            groups.setdefault(owner.get(p.pid), []).append(p)
        for name, procs in groups.items():
            use = _use(procs, r.per_process)
            if not r.per_process and len(groups) == 1 and r.utilization is not None:
                use = Use(use.memory, r.utilization, use.pids)
            if name is None:
                other[r.index] = use
            else:
                workloads.setdefault(name, {})[r.index] = use
    return Attribution(workloads, other, {r.index: r for r in readings})


def workload_doc(
    seen: Attribution | None, error: str | None, name: str, planned: Sequence[int], running: bool
) -> dict[str, Any]:
    """A workload's GPU figures for status: per GPU, summed memory and mean utilization.

    Its planned GPUs are listed while it runs (with 0 where it holds nothing), and any other
    GPU where its processes were found.
    """
    if error is not None:
        return {"gpu_error": error} if running and planned else {}
    if seen is None:
        return {}
    mine = seen.workloads.get(name, {})
    indices = sorted(set(mine) | (set(planned) if running else set()))
    if not indices:
        return {}
    rows: list[dict[str, Any]] = []
    for i in indices:
        reading = seen.gpus.get(i)
        use = mine.get(i)
        if use is None:  # its GPU, none of its processes on it: it uses none of it
            answered = reading is not None and reading.error is None
            use = Use(0 if answered else None, 0.0 if answered else None, ())
        rows.append(
            {
                "gpu": i,
                "uuid": None if reading is None else reading.uuid,
                "memory_bytes": use.memory,
                "utilization_percent": use.sm_percent,
                "pids": list(use.pids),
                "error": None if reading is None else reading.error,
            }
        )
    memories = [r["memory_bytes"] for r in rows if r["memory_bytes"] is not None]
    utils = [r["utilization_percent"] for r in rows if r["utilization_percent"] is not None]
    return {
        "gpu_usage": rows,
        "gpu_memory_bytes": sum(memories) if memories else None,
        "gpu_utilization_percent": sum(utils) / len(utils) if utils else None,
    }


def gpu_docs(seen: Attribution | None, error: str | None, gpus: Sequence[Gpu]) -> list[Any]:
    """Per GPU: the device's utilization and what processes outside the workloads hold."""
    out = []
    for g in gpus:
        reading = None if seen is None else seen.gpus.get(g.index)
        other = None if seen is None else seen.other.get(g.index)
        answered = reading is not None and reading.error is None
        out.append(
            {
                "index": g.index,
                "uuid": g.uuid,
                "utilization_percent": reading.utilization if reading is not None else None,
                "other_memory_bytes": (other.memory if other else 0) if answered else None,
                "other_pids": list(other.pids) if other else [],
                "error": error if error is not None else (reading.error if reading else None),
            }
        )
    return out


class GpuAccounting:
    """nxrd's latest view of GPU use, refreshed by poll() at most once per tick."""

    def __init__(self, gpus: Sequence[Gpu], guard: Guard | None = None, nvml: Any = None) -> None:
        self.gpus = list(gpus)
        self.reader = UsageReader(self.gpus, guard or Guard(), nvml)
        self.seen: Attribution | None = None
        self.error: str | None = None

    def poll(self, owner_of: Callable[[int], str | None]) -> None:
        """Read NVML (never longer than the guard's timeout) and attribute what it reports."""
        try:
            readings = self.reader.read()
        except KernelError as e:
            # Figures from before the driver stopped answering would be stale: none at all.
            self.seen, self.error = None, str(e)
            return
        pids = {p.pid for r in readings for p in r.processes}
        self.seen = attribute(readings, {pid: owner_of(pid) for pid in pids})
        self.error = None

    def workload(self, name: str, planned: Sequence[int], running: bool) -> dict[str, Any]:
        return workload_doc(self.seen, self.error, name, planned, running)

    def host(self) -> list[Any]:
        return gpu_docs(self.seen, self.error, self.gpus)
