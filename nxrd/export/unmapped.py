"""What a profile asks for that Kubernetes cannot express: one warning line each, never a
silent drop (docs/kubernetes.md lists them with what to do instead)."""

from __future__ import annotations

from nxrd.profile.model import Profile, Workload

# Workload fields with no equivalent in a pod spec, and why, when the profile sets them.
WORKLOAD_FIELDS = {
    "cpuset": "explicit CPUs: the kubelet's static CPU manager picks a Guaranteed pod's cores",
    "memory_high": "no memory.high in a pod spec (only the alpha MemoryQoS feature sets one)",
    "memory_low": "no memory.low in a pod spec; memory_min becomes requests.memory instead",
    "swap_max": "swap is per node and QoS class (the kubelet's memorySwap), not per pod",
    "zswap_max": "zswap is per node, not per pod",
    "right_size": "memory.high right-sizing is nxrd's; in a cluster, a VerticalPodAutoscaler",
    "cpu_weight": "the kubelet sets cpu.weight from requests.cpu",
    "cpu_idle": "no cpu.idle in a pod spec",
    "pids_max": "the pids limit is the kubelet's podPidsLimit, one value per node",
    "io_weight": "no io.weight in a pod spec",
    "gpu_shared": "GPU sharing is the device plugin's (time-slicing or MPS), per node",
    "gpu_memory": "the device plugin gives whole GPUs; GPU memory is not a resource",
    "gpu_compute": "MPS thread percentage is the device plugin's, per node",
    "gpu_memory_policy": "the node agent does not yet watch GPU memory",
    "after": "a Deployment has no start order between workloads",
    "pool": "no concurrency pools in Kubernetes (Kueue or a Job's parallelism does this)",
    "pool_slots": "no concurrency pools in Kubernetes",
}
RESTART_FIELDS = {
    "delay": "the kubelet's restart back-off is its own (10 s, doubling to 5 min)",
    "max_delay": "the kubelet's restart back-off is its own (10 s, doubling to 5 min)",
    "max_restarts": "a Deployment's pod is restarted without limit",
    "window": "a Deployment's pod is restarted without limit",
}
SERVE_FIELDS = {
    "inflight": "a Service caps no in-flight requests",
    "queue": "a Service queues no requests",
    "queue_timeout": "a Service queues no requests",
    "timeout": "a Service sets no request timeout",
    "balance": "a Service (kube-proxy) balances connections its own way",
    "priority_header": "a Service has no request priorities",
    "retry_after": "a Service refuses no requests",
}
HOST_FIELDS = {
    "metrics": "the node agent serves its own metrics",
    "mps": "MPS is the NVIDIA device plugin's setting, per node",
    "net": "egress shaping on a node is the CNI's; per pod, the bandwidth plugin's annotation",
    "memory_guard": "the kubelet's eviction thresholds decide what is evicted first",
}


def workload_warnings(name: str, wl: Workload) -> list[str]:
    """One line per field the profile sets and the manifests cannot carry."""
    out = [f"workload {name}: {f}: {why}" for f, why in _set(wl, WORKLOAD_FIELDS)]
    out += [f"workload {name}: restart.{f}: {why}" for f, why in _set(wl.restart, RESTART_FIELDS)]
    if wl.restart.policy == "on-failure" and "policy" in _fields(wl.restart):
        out.append(
            f"workload {name}: restart.policy on-failure: a Deployment restarts after any exit"
        )
    if wl.stop.signal != "SIGTERM":
        out.append(f"workload {name}: stop.signal {wl.stop.signal}: the kubelet sends SIGTERM")
    for field in ("user", "group"):
        value = getattr(wl, field)
        if value is not None and not value.isdigit():
            out.append(
                f"workload {name}: {field} {value!r}: a pod runs as a numeric id; give the number"
            )
    if isinstance(wl.gpus, tuple):
        out.append(
            f"workload {name}: gpus: listed GPUs become a count; the device plugin picks which"
        )
    if wl.serve is not None:
        out += [f"workload {name}: serve.{f}: {why}" for f, why in _set(wl.serve, SERVE_FIELDS)]
    if wl.net is not None:
        for field in ("guarantee", "priority"):
            if getattr(wl.net, field) is not None:
                out.append(
                    f"workload {name}: net.{field}: the bandwidth CNI plugin only caps egress"
                )
    if wl.ready is not None and wl.ready.interval < 1:
        out.append(f"workload {name}: ready.interval under 1s: the kubelet probes every 1s")
    return out


def profile_warnings(profile: Profile) -> list[str]:
    out = [f"host: {f}: {why}" for f, why in _set(profile.host, HOST_FIELDS)]
    if profile.pools:
        out.append("pools: no concurrency pools in Kubernetes")
    if _fields(profile.controller):
        out.append("controller: the node agent's own profile carries it, not the manifests")
    return out


def _fields(section: object) -> set[str]:
    return set(getattr(section, "model_fields_set", set()))


def _set(section: object, table: dict[str, str]) -> list[tuple[str, str]]:
    """The table's fields the profile set itself (defaults are not the profile asking)."""
    return [(f, why) for f, why in table.items() if f in _fields(section)]
