"""NVIDIA GPUs through NVML. No driver means no GPUs and a reason, never a crash."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nxrd.kernel.nvml_guard import Guard, NotAnswering
from nxrd.model.topology import Gpu, MigInstance

T = TypeVar("T")


def nvml_text(value: Any) -> str:
    """NVML strings: bytes from older pynvml releases, str from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


# nvmlComputeMode_t; 1 (exclusive-thread) is no longer reported by current drivers.
COMPUTE_MODES = {0: "default", 1: "exclusive-thread", 2: "prohibited", 3: "exclusive-process"}


# nvmlInit alone can take seconds per GPU without persistence mode; a wedged driver never
# answers, and nxrd must still start (systemd gives it 90 s) and run the CPU workloads.
DISCOVERY_TIMEOUT = 30.0


def discover_gpus(
    root: Path = Path("/"), timeout: float = DISCOVERY_TIMEOUT
) -> tuple[list[Gpu], str | None]:
    """(GPUs, note); the note says why the list is empty when it is."""
    try:
        return Guard(timeout).call("GPU discovery", _discover, root)
    except NotAnswering:
        return [], (
            f"NVML did not answer within {timeout:g} s; is the NVIDIA driver wedged? "
            "(no GPUs until nxrd restarts)"
        )


def _discover(root: Path) -> tuple[list[Gpu], str | None]:
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [], f"NVML unavailable ({nvml_text(e)}); is the NVIDIA driver loaded?"
    except OSError as e:  # libnvidia-ml.so missing on some pynvml versions
        return [], f"NVML unavailable ({e}); is the NVIDIA driver installed?"
    try:
        gpus = [_gpu(pynvml, i, root) for i in range(pynvml.nvmlDeviceGetCount())]
        return gpus, None if gpus else "NVML reports no GPUs"
    except pynvml.NVMLError as e:
        return [], f"NVML query failed: {nvml_text(e)}"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _gpu(nvml: Any, i: int, root: Path) -> Gpu:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    bus = nvml_text(nvml.nvmlDeviceGetPciInfo(h).busId)
    mode = optional(nvml, nvml.nvmlDeviceGetComputeMode, h)
    mig = optional(nvml, nvml.nvmlDeviceGetMigMode, h)  # (current, pending)
    on = bool(mig is not None and mig[0] == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))
    return Gpu(
        index=i,
        uuid=nvml_text(nvml.nvmlDeviceGetUUID(h)),
        name=nvml_text(nvml.nvmlDeviceGetName(h)),
        memory=int(nvml.nvmlDeviceGetMemoryInfo(h).total),
        node=_pci_numa_node(root, bus),
        local_cpus=_pci_local_cpus(root, bus),
        pci_bus_id=bus,
        minor=optional(nvml, nvml.nvmlDeviceGetMinorNumber, h),
        compute_mode="default" if mode is None else COMPUTE_MODES.get(mode, f"unknown ({mode})"),
        mig=on,
        # Walked only with MIG on: on other GPUs every slot would be a refused query.
        mig_instances=_mig_instances(nvml, h) if on else [],
    )


def _mig_instances(nvml: Any, h: Any) -> list[MigInstance]:
    out = []
    for slot in range(optional(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, h) or 0):
        try:
            m = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
        except nvml.NVMLError as e:
            if is_error(nvml, e, "NotFound"):
                continue  # an empty slot: no instance created there
            raise
        out.append(
            MigInstance(
                index=slot,
                uuid=nvml_text(nvml.nvmlDeviceGetUUID(m)),
                name=nvml_text(optional(nvml, nvml.nvmlDeviceGetName, m) or ""),
                memory=int(getattr(optional(nvml, nvml.nvmlDeviceGetMemoryInfo, m), "total", 0)),
            )
        )
    return out


# What a driver or GPU that lacks a feature answers: NotSupported from the GPU, and
# FunctionNotFound from a libnvidia-ml older than the binding.
UNSUPPORTED = ("NotSupported", "FunctionNotFound")


def is_error(nvml: Any, e: BaseException, *names: str) -> bool:
    """Whether e is one of pynvml's NVMLError_<name> classes."""
    kinds = tuple(k for n in names if isinstance(k := getattr(nvml, f"NVMLError_{n}", None), type))
    return bool(kinds) and isinstance(e, kinds)


def optional(nvml: Any, fn: Callable[..., T], *args: Any) -> T | None:
    """fn(*args), or None where the driver or GPU does not support that query."""
    try:
        return fn(*args)
    except nvml.NVMLError as e:
        if is_error(nvml, e, *UNSUPPORTED):
            return None
        raise


def _pci_dir(root: Path, bus_id: str) -> Path:
    # NVML's bus id has 8 domain digits ("00000000:41:00.0"), sysfs uses 4 and lower case.
    domain, _, rest = bus_id.lower().partition(":")
    return root / "sys/bus/pci/devices" / f"{domain[-4:]}:{rest}"


def _pci_numa_node(root: Path, bus_id: str) -> int | None:
    """NUMA node of a PCI device; -1 or no file means the platform does not say."""
    try:
        node = int((_pci_dir(root, bus_id) / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def _pci_local_cpus(root: Path, bus_id: str) -> str | None:
    """CPUs the platform calls local to a PCI device (its local_cpulist)."""
    try:
        text = (_pci_dir(root, bus_id) / "local_cpulist").read_text().strip()
    except OSError:
        return None
    return text or None
