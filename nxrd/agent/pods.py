"""A node's pods as the kubelet lists them, and where each one's cgroup is. Pure.

The kubelet's pod list (its /pods endpoint, a v1.PodList) says each pod's uid, QoS class
and containers; the kubelet's cgroup driver says how those become cgroup paths:

    systemd:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
              cri-containerd-<id>.scope        (the uid's '-' written as '_'; Guaranteed
              pods directly under kubepods.slice, as kubepods-pod<uid>.slice)
    cgroupfs: kubepods/burstable/pod<uid>/<id> (Guaranteed: kubepods/pod<uid>)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from nxrd.errors import NxrError

Driver = Literal["systemd", "cgroupfs"]
ANNOTATION = "nxr.io/"  # what nxrctl export kubernetes writes (export/kubernetes.py)
QOS = {"Guaranteed": "", "Burstable": "burstable", "BestEffort": "besteffort"}
# the container runtime's name in a containerID ("containerd://ID") -> its systemd scope
SCOPES = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}


class PodListError(NxrError):
    """The kubelet's answer is not a pod list this agent can read."""


@dataclass(frozen=True)
class Container:
    name: str
    id: str  # the runtime's id, without "containerd://"
    runtime: str  # containerd, cri-o or docker


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    qos: str  # Guaranteed, Burstable or BestEffort
    ip: str | None
    annotations: dict[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()
    cpu_request: int = 0  # millicores, summed over its containers
    cpu_limit: int | None = None  # millicores; None: some container has no limit

    @property
    def kubelet_weight(self) -> int:
        """The cpu.weight the kubelet gives the pod's cgroup: cpu.shares from its requests
        (at least 2), converted to a weight as the kubelet and runc do."""
        shares = max(2, self.cpu_request * 1024 // 1000)
        return 1 + (shares - 2) * 9999 // 262142

    @property
    def kubelet_cpu_max(self) -> float | None:
        """The pod's CPU limit in CPUs (its cgroup's cpu.max); None: no limit."""
        return None if self.cpu_limit is None else self.cpu_limit / 1000

    @property
    def key(self) -> str:
        """namespace/name: how nxrctl and the events name it."""
        return f"{self.namespace}/{self.name}"

    @property
    def nxr_class(self) -> str | None:
        """The nxr class its manifest was exported with; None: not an nxr workload."""
        return self.annotations.get(ANNOTATION + "class")

    def note(self, name: str) -> Any:
        """An nxr.io/ annotation holding JSON (slo, control), decoded; None when absent."""
        text = self.annotations.get(ANNOTATION + name)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise PodListError(f"pod {self.key}: {ANNOTATION}{name} is not JSON") from None


def parse_pods(data: object, node: str | None = None) -> list[Pod]:
    """The running pods of a v1.PodList (on `node` only, when given). A pod still pending,
    or whose containers have no id yet, has no cgroup to act on and is left out."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise PodListError("the kubelet's answer is not a PodList (no items)")
    pods = []
    for item in data["items"]:
        meta, spec, status = (item.get(k) or {} for k in ("metadata", "spec", "status"))
        if node is not None and spec.get("nodeName") not in (None, node):
            continue
        if status.get("phase") != "Running" or status.get("qosClass") not in QOS:
            continue
        containers = tuple(
            c for c in (_container(s) for s in status.get("containerStatuses") or []) if c
        )
        if not containers or not meta.get("uid"):
            continue
        resources = [c.get("resources") or {} for c in spec.get("containers") or []]
        requests = [_millicores((r.get("requests") or {}).get("cpu")) for r in resources]
        limits = [_millicores((r.get("limits") or {}).get("cpu")) for r in resources]
        pods.append(
            Pod(
                namespace=meta.get("namespace", "default"),
                name=meta.get("name", ""),
                uid=meta["uid"],
                qos=status["qosClass"],
                ip=status.get("podIP"),
                annotations=dict(meta.get("annotations") or {}),
                containers=containers,
                cpu_request=sum(r or 0 for r in requests),
                cpu_limit=None if None in limits or not limits else sum(filter(None, limits)),
            )
        )
    return pods


def _millicores(quantity: object) -> int | None:
    """A CPU quantity ("250m", "1", "1.5", 2) in millicores; None when absent."""
    if quantity is None:
        return None
    text = str(quantity)
    try:
        if text.endswith("m"):
            return int(text[:-1])
        return round(float(text) * 1000)
    except ValueError:
        raise PodListError(f"{text!r} is not a CPU quantity") from None


def _container(status: dict[str, Any]) -> Container | None:
    runtime, sep, cid = str(status.get("containerID", "")).partition("://")
    if not sep or not cid or not (status.get("state") or {}).get("running"):
        return None
    return Container(str(status.get("name", "")), cid, runtime)


def pod_cgroup(pod: Pod, driver: Driver) -> str:
    """The pod's cgroup, relative to the cgroup2 mount."""
    qos = QOS[pod.qos]
    if driver == "cgroupfs":
        return "/".join(p for p in ("kubepods", qos, f"pod{pod.uid}") if p)
    uid = pod.uid.replace("-", "_")
    if not qos:
        return f"kubepods.slice/kubepods-pod{uid}.slice"
    return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice"


def container_cgroup(pod: Pod, container: Container, driver: Driver) -> str:
    if driver == "cgroupfs":
        return f"{pod_cgroup(pod, driver)}/{container.id}"
    scope = SCOPES.get(container.runtime, container.runtime)
    return f"{pod_cgroup(pod, driver)}/{scope}-{container.id}.scope"
