"""NVIDIA GPUs through NVML. No driver means no GPUs and a reason, never a crash."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from nxrd.plan.topology import Gpu


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover_gpus(root: Path = Path("/")) -> tuple[list[Gpu], str | None]:
    """(GPUs, note); the note says why the list is empty when it is."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [], f"NVML unavailable ({_text(e)}); is the NVIDIA driver loaded?"
    except OSError as e:  # libnvidia-ml.so missing on some pynvml versions
        return [], f"NVML unavailable ({e}); is the NVIDIA driver installed?"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            bus = _text(pynvml.nvmlDeviceGetPciInfo(h).busId)
            gpus.append(
                Gpu(
                    index=i,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    memory=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    node=_pci_numa_node(root, bus),
                    local_cpus=_pci_local_cpus(root, bus),
                    pci_bus_id=bus,
                )
            )
        return gpus, None if gpus else "NVML reports no GPUs"
    except pynvml.NVMLError as e:
        return [], f"NVML query failed: {_text(e)}"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


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
