"""The kubelet settings a node needs for the exported manifests to be isolated as nxr
would isolate them (docs/kubernetes.md): the static CPU manager pins Guaranteed pods with
whole CPUs, the topology manager keeps them near their GPUs, the CPUs nxr reserves for the
system are the kubelet's reservedSystemCPUs."""

from __future__ import annotations

from typing import Any

from nxrd.export.kubernetes import quantity
from nxrd.model.units import format_cpu_list
from nxrd.profile.model import Profile

EVICTION_HARD = 100 << 20  # the kubelet's default memory.available eviction threshold


def kubelet_config(profile: Profile) -> dict[str, Any]:
    """A KubeletConfiguration (kubelet.config.k8s.io/v1beta1) to merge into the node's."""
    reserved = profile.host.reserved_cpus or frozenset({0})
    gpu_pinned = any(w.is_exclusive and w.gpus for w in profile.workloads.values())
    system = max(profile.host.reserved_memory, 512 << 20)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cpuManagerPolicy": "static",
        # Whole physical cores, as nxr gives exclusive workloads on SMT hosts.
        "cpuManagerPolicyOptions": {"full-pcpus-only": "true"},
        "reservedSystemCPUs": format_cpu_list(reserved),
        # restricted: a pod whose CPUs and GPUs cannot share a NUMA node is refused, as
        # nxr's planner refuses it; best-effort when no pinned workload has GPUs.
        "topologyManagerPolicy": "restricted" if gpu_pinned else "best-effort",
        "topologyManagerScope": "pod",
        "memoryManagerPolicy": "Static",
        "systemReserved": {"memory": quantity(system)},
        "evictionHard": {"memory.available": quantity(EVICTION_HARD)},
        # The Static memory manager wants the reserve stated per NUMA node; all on node 0
        # here: split it on a host with several.
        "reservedMemory": [{"numaNode": 0, "limits": {"memory": quantity(system + EVICTION_HARD)}}],
    }
