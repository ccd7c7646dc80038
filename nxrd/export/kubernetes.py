"""A profile as Kubernetes manifests: what the kubelet's own isolation needs to match nxr's
plan (docs/kubernetes.md). Pure: a profile in, documents and warnings out.

Latency-critical (exclusive) workloads become Guaranteed pods with whole CPUs, which the
kubelet's static CPU manager pins; the other classes Burstable or BestEffort. What a pod
spec cannot say (class, SLO, latency source, controller limits) travels as annotations for
nxr's node agent; what nothing carries is a warning (unmapped.py)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nxrd.errors import Problem, ProfileError
from nxrd.export.unmapped import profile_warnings, workload_warnings
from nxrd.plan.threads import THREAD_VARS
from nxrd.profile.model import Profile, Ready, Workload

ANNOTATION = "nxr.io/"
GPU_RESOURCE = "nvidia.com/gpu"
# PriorityClass values: the class order of nxr's ladder, well under the 1e9 reserved above.
PRIORITY = {"latency-critical": 1_000_000, "interactive": 100_000, "batch": 10_000,
            "background": 1_000}  # fmt: skip
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@dataclass
class Export:
    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def export(
    profile: Profile,
    images: dict[str, str],
    namespace: str | None = None,
    source: str | None = None,
) -> Export:
    """Manifests for every workload of profile; images: workload name -> image, "" for all.
    Raises ProfileError naming every workload that cannot be exported."""
    out = Export(warnings=profile_warnings(profile))
    problems: list[Problem] = []
    names: dict[str, str] = {}
    for name, wl in profile.workloads.items():
        where = f"workloads.{name}"
        kname = name.replace("_", "-")
        if not _DNS_LABEL.match(kname):
            why = "a Kubernetes name starts with a letter and does not end with '-'; rename it"
            problems.append(Problem(where, f"{kname!r}: {why}"))
        elif kname in names:
            problems.append(Problem(where, f"the same Kubernetes name as {names[kname]}: {kname}"))
        if wl.is_exclusive and wl.memory_max is None:
            why = "an exclusive workload needs one to be a Guaranteed pod (the only kind pinned)"
            problems.append(Problem(f"{where}.memory_max", why))
        if not (images.get(name) or images.get("")):
            problems.append(Problem(where, f"no image: pass --image {name}=IMAGE or --image IMAGE"))
        names[kname] = name
    if problems:
        raise ProfileError(source, problems)
    for cls in sorted(
        {wl.workload_class for wl in profile.workloads.values()}, key=lambda c: -PRIORITY[c]
    ):
        out.documents.append(_priority_class(cls))
    for name, wl in profile.workloads.items():
        kname = name.replace("_", "-")
        image = images.get(name) or images[""]
        out.documents.append(_controller(kname, wl, image, namespace))
        if wl.serve is not None and wl.port is not None:
            out.documents.append(_service(kname, wl, namespace))
        out.warnings += workload_warnings(name, wl)
    return out


def _priority_class(cls: str) -> dict[str, Any]:
    lower = cls in ("batch", "background")
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": f"nxr-{cls}"},
        "value": PRIORITY[cls],
        "globalDefault": False,
        # Lower classes wait for room rather than evict anything to get it.
        "preemptionPolicy": "Never" if lower else "PreemptLowerPriority",
        "description": f"nxr {cls} workloads",
    }


def _meta(kname: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": kname, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _labels(kname: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": kname, "app.kubernetes.io/managed-by": "nxrctl"}


def _controller(kname: str, wl: Workload, image: str, ns: str | None) -> dict[str, Any]:
    """A Deployment, or a Job for a workload that is not restarted (restart.policy "no")."""
    labels = _labels(kname)
    job = wl.restart.policy == "no"
    pod: dict[str, Any] = {
        "priorityClassName": f"nxr-{wl.workload_class}",
        "terminationGracePeriodSeconds": math.ceil(wl.stop.timeout),
        "containers": [_container(kname, wl, image)],
    }
    if job:
        pod["restartPolicy"] = "Never"
    template = {"metadata": {"labels": labels, "annotations": _annotations(wl)}, "spec": pod}
    if job:
        spec: dict[str, Any] = {"backoffLimit": 0, "template": template}
        if wl.replicas:
            spec["parallelism"] = spec["completions"] = wl.replicas
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": _meta(kname, ns, labels=labels), "spec": spec}  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(kname, ns, labels=labels),
        "spec": {
            "replicas": wl.replicas or 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": kname}},
            "template": template,
        },
    }


def _container(kname: str, wl: Workload, image: str) -> dict[str, Any]:
    c: dict[str, Any] = {"name": kname, "image": image, "command": list(wl.command)}
    env = dict(wl.env)
    threads = _threads(wl)
    if threads is not None:
        env.update({v: str(threads) for v in THREAD_VARS if v not in wl.env})
    if wl.port is not None:
        env["NXR_PORT"] = str(wl.port)  # every pod has its own address: one port for all
        c["ports"] = [{"containerPort": wl.port, "protocol": "TCP"}]
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if wl.cwd:
        c["workingDir"] = wl.cwd
    c["resources"] = resources(wl)
    if wl.ready is not None:
        c.update(_probes(wl.ready))
    ids = {k: int(v) for k, v in (("runAsUser", wl.user), ("runAsGroup", wl.group))
           if v is not None and v.isdigit()}  # fmt: skip
    if ids:
        c["securityContext"] = ids
    return c


def resources(wl: Workload) -> dict[str, dict[str, str]]:
    """Requests and limits; an exclusive workload's are equal, in whole CPUs (Guaranteed)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    gpus = len(wl.gpus) if isinstance(wl.gpus, tuple) else wl.gpus
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    if wl.is_exclusive:
        cpus = wl.cpus if wl.cpus is not None else len(wl.cpuset or ())
        requests["cpu"] = limits["cpu"] = str(cpus)
        requests["memory"] = limits["memory"] = quantity(wl.memory_max or 0)
        return {"requests": requests, "limits": limits}
    if wl.cpus is not None:
        requests["cpu"] = str(wl.cpus)
    if wl.cpu_max is not None:
        limits["cpu"] = _cpu(wl.cpu_max)
        # Without a request the API server copies the limit into it.
        requests.setdefault("cpu", _cpu(min(wl.control.min_cpu, wl.cpu_max)))
    if wl.memory_min is not None:
        requests["memory"] = quantity(wl.memory_min)
    if wl.memory_max is not None:
        limits["memory"] = quantity(wl.memory_max)
    out = {"requests": requests, "limits": limits}
    return {k: v for k, v in out.items() if v}


def quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest binary unit that divides them."""
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _cpu(cpus: float) -> str:
    return str(int(cpus)) if cpus == int(cpus) else f"{round(cpus * 1000)}m"


def _threads(wl: Workload) -> int | None:
    """What nxr would size thread pools to: the CPUs it asks for, else its CPU cap."""
    if wl.threads == "off":
        return None
    if isinstance(wl.threads, int):
        return wl.threads
    if wl.cpus is not None:
        return wl.cpus
    if wl.cpuset is not None:
        return len(wl.cpuset)
    if wl.cpu_max is not None:
        return max(1, math.ceil(wl.cpu_max))
    return None


def _probes(ready: Ready) -> dict[str, Any]:
    """startupProbe: the time ready.timeout gives a start; readinessProbe: afterwards."""
    handler: dict[str, Any]
    if ready.http is not None:
        url = urlsplit(ready.http)
        port = url.port or (443 if url.scheme == "https" else 80)
        path = url.path or "/"
        handler = {"httpGet": {"path": path + (f"?{url.query}" if url.query else ""),
                               "port": port, "scheme": url.scheme.upper()}}  # fmt: skip
    elif ready.tcp is not None:
        handler = {"tcpSocket": {"port": int(ready.tcp.rsplit(":", 1)[1])}}
    else:
        handler = {"exec": {"command": list(ready.exec or ())}}
    period = max(1, round(ready.interval))
    startup = {**handler, "periodSeconds": period,
               "failureThreshold": max(1, math.ceil(ready.timeout / period))}  # fmt: skip
    return {"startupProbe": startup, "readinessProbe": {**handler, "periodSeconds": period}}


def _annotations(wl: Workload) -> dict[str, str]:
    """What the node agent needs and a pod spec cannot say."""
    out = {
        ANNOTATION + "class": wl.workload_class,
        ANNOTATION + "priority": str(wl.priority),
        ANNOTATION + "control": _json(wl.control.model_dump(mode="json")),
    }
    if wl.slo is not None:
        out[ANNOTATION + "slo"] = _json(wl.slo.model_dump(mode="json", exclude_none=True))
    if wl.net is not None and wl.net.egress is not None:
        # The bandwidth CNI plugin's annotation, in bits per second.
        out["kubernetes.io/egress-bandwidth"] = str(wl.net.egress)
    return out


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _service(kname: str, wl: Workload, ns: str | None) -> dict[str, Any]:
    assert wl.serve is not None and wl.port is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(kname, ns, labels=_labels(kname)),
        "spec": {
            "selector": {"app.kubernetes.io/name": kname},
            "ports": [{"port": wl.serve.port, "targetPort": wl.port, "protocol": "TCP"}],
        },
    }
