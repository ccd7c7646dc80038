"""The control law's view of a node's pods: targets from latency-critical pods with an
SLO, lower workloads from the other nxr classes. Pure: pods and what their cgroups hold in,
a Spec out.

The kubelet's CPU manager owns every cpuset on the node, so the ladder here never moves
cores: no lending, no sharing (Spec.lend and Spec.share off); it weights, caps and freezes.
The kubelet starts and stops pods, so no rung stops one either."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from nxrd.agent.pods import ANNOTATION, Pod, PodListError
from nxrd.controller.law import Lower, Spec, Target
from nxrd.controller.spec import tuned
from nxrd.model.classes import CLASSES, policy
from nxrd.profile.model import Control, ControllerSettings, Slo


@dataclass(frozen=True)
class Found:
    """What a pod's cgroup held when the agent first saw it: the kubelet's values, which
    the ladder starts from and which are written back when it steps down or stops."""

    cpus: tuple[int, ...]  # cpuset.cpus.effective
    weight: int  # cpu.weight
    cpu_max: float | None  # cpu.max in CPUs; None: "max"


@dataclass(frozen=True)
class NodeSpec:
    spec: Spec
    slos: dict[str, Slo]  # target pod -> its SLO, source URLs aimed at the pod's address
    problems: list[str]  # pods whose annotations cannot be used, one line each


def node_spec(pods: list[Pod], found: dict[str, Found], c: ControllerSettings) -> NodeSpec:
    targets, lowers, problems = [], [], []
    slos: dict[str, Slo] = {}
    for pod in sorted(pods, key=lambda p: p.key):
        cls = pod.nxr_class
        have = found.get(pod.key)
        if cls is None or have is None:
            continue  # not exported by nxr, or its cgroup is not there (yet)
        if cls not in CLASSES:
            problems.append(f"pod {pod.key}: {ANNOTATION}class {cls!r} is not an nxr class")
            continue
        try:
            control = Control.model_validate(pod.note("control") or {})
            slo_data = pod.note("slo")
            slo = None if slo_data is None else Slo.model_validate(slo_data)
            priority = int(pod.annotations.get(ANNOTATION + "priority", "500"))
        except (ValidationError, ValueError, PodListError) as e:
            why = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            problems.append(f"pod {pod.key}: its nxr.io/ annotations are unreadable: {why}")
            continue
        if policy(cls).protected:
            if slo is None:
                continue
            name, seconds = slo.target
            targets.append(Target(pod.key, seconds, name, have.cpus))
            slos[pod.key] = _aimed(slo, pod.ip)
            if slo.source.push or slo.source.front:
                problems.append(
                    f"pod {pod.key}: the node agent reads latency from prometheus or a probe "
                    "only, not push or front"
                )
            continue
        lowers.append(
            Lower(
                pod.key,
                cls,
                have.cpus,
                have.weight,
                min_cpu=control.min_cpu,
                may_freeze=control.freeze,
                may_stop=False,
                cpu_max=have.cpu_max,
                priority=priority,
            )
        )
    spec = tuned(c, targets, lowers, share=False, lend=False)
    return NodeSpec(spec, slos, problems)


def _aimed(slo: Slo, ip: str | None) -> Slo:
    """The SLO with its source's loopback URL aimed at the pod's address: an exported
    profile names 127.0.0.1, which inside the pod is the pod itself."""
    src = slo.source
    if ip is None:
        return slo
    if src.prometheus is not None:
        p = src.prometheus.model_copy(update={"url": _at(src.prometheus.url, ip)})
        return slo.model_copy(update={"source": src.model_copy(update={"prometheus": p})})
    if src.probe is not None:
        probe = src.probe.model_copy(update={"url": _at(src.probe.url, ip)})
        return slo.model_copy(update={"source": src.model_copy(update={"probe": probe})})
    return slo


def _at(url: str, ip: str) -> str:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return url
    host = f"[{ip}]" if ":" in ip else ip
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
