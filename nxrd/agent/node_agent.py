"""nxr's controller on a Kubernetes node: the kubelet's pods in, the ladder's cgroup values
out, on the pod-level cgroups of lower-class pods (docs/kubernetes.md).

It writes only cpu.weight, cpu.max and cgroup.freeze of those pods' own cgroups. The
kubelet writes the first two when it creates or resizes a pod and never re-reads them, so
the agent starts from the values the pod's spec gives (not from what the cgroup holds,
which after an agent crash may still be its own) and writes those back when the ladder
steps down, when the pod stops being a lower one, and when the agent stops. cpusets are the
CPU manager's: the agent never writes one."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable
from typing import Any

from nxrd.agent.node_spec import Found, node_spec
from nxrd.agent.pods import Driver, Pod, PodListError, parse_pods, pod_cgroup
from nxrd.controller.histogram import ScrapeError
from nxrd.controller.law import LadderState, Observation, ladder, rung_name, settings, step
from nxrd.controller.poll import Fetched, Poller
from nxrd.controller.samples import QUANTILES
from nxrd.controller.scraped import Scraped
from nxrd.errors import KernelError
from nxrd.kernel.cgroupfs import CgroupFS
from nxrd.model.units import format_cpu_list, parse_cpu_list
from nxrd.profile.model import ControllerSettings
from nxrd.supervisor.events import EventLog

WRITTEN = ("cpu.weight", "cpu.max")  # of the ladder's files, those a pod's cgroup may take


class NodeAgent:
    def __init__(
        self,
        fs: CgroupFS,
        fetch: Callable[[], object],
        driver: Driver,
        events: EventLog,
        wall: Callable[[], float],
        controller: ControllerSettings,
        node: str | None = None,
        refresh: float = 5.0,
    ) -> None:
        self.fs, self.fetch, self.driver, self.events, self.wall = fs, fetch, driver, events, wall
        self.c, self.node, self.refresh = controller, node, refresh
        self.pods: dict[str, Pod] = {}
        self.found: dict[str, Found] = {}
        self.view = node_spec([], {}, controller)
        self.state = LadderState()
        self.rungs: list[str] = []
        self.scraped: dict[str, Scraped] = {}
        self.pollers: dict[str, Poller] = {}
        self.fetched: queue.Queue[Fetched] = queue.Queue()
        self.last_sample: dict[str, float] = {}
        self.froze: set[str] = set()
        self.written: dict[tuple[str, str], tuple[str, str, float]] = {}  # value, why, when
        self.actions: dict[tuple[str, str], int] = {}  # (direction, rung) -> decisions
        self.said: set[str] = set()
        self.next_refresh = self.next_tick = 0.0

    def tick(self, now: float) -> None:
        if now >= self.next_refresh:
            self.next_refresh = now + self.refresh
            self._refresh(now)
        if now < self.next_tick or not self.view.spec.targets:
            return
        self.next_tick = now + self.c.period
        self._drain(now)
        targets = self.view.spec.targets
        latency = {t.name: self._latency(t.name, t.percentile) for t in targets}
        age = {n: now - self.last_sample.get(n, float("-inf")) for n in latency}
        before = self.state.level
        self.state, decisions = step(self.state, Observation(latency, age), self.view.spec, now)
        for d in decisions:
            self.actions[(d.direction, d.rung)] = self.actions.get((d.direction, d.rung), 0) + 1
            self.events.record(
                self.wall(),
                "controller",
                rung_name(before, self.rungs),
                d.rung,
                d.reason,
                {"direction": d.direction, "level": d.level, **d.inputs},
            )
        if decisions:
            rung = rung_name(self.state.level, self.rungs)
            self._enforce(f"controller: {rung} ({decisions[-1].reason})")

    def status(self) -> list[dict[str, Any]]:
        """What `nxrctl status` shows for each nxr pod the agent acts on or for."""
        level = self.state.level
        out: list[dict[str, Any]] = []
        spec = self.view.spec
        for key in [t.name for t in spec.targets] + [w.name for w in spec.lowers]:
            pod = self.pods[key]
            slo = self.view.slos.get(key)
            frozen = key in self.froze
            latency = None if slo is None else self._latency(key, slo.target[0])
            out.append(
                {
                    "name": key,
                    "class": pod.nxr_class,
                    "state": "ready",
                    "frozen": frozen,
                    "frozen_by": "controller" if frozen else None,
                    "reason": "" if level == 0 or slo else f"rung {rung_name(level, self.rungs)}",
                    "pid": None,
                    "cpus": format_cpu_list(list(self.found[key].cpus)),
                    "memory_max": None,
                    "gpus": [],
                    "restarts": 0,
                    "cgroup": pod_cgroup(pod, self.driver),
                    "slo_percentile": None if slo is None else slo.target[0],
                    "slo_seconds": None if slo is None else slo.target[1],
                    "latency_seconds": latency,
                    **self._usage(pod_cgroup(pod, self.driver)),
                }
            )
        return out

    def summary(self) -> dict[str, object]:
        """For the metrics endpoint, as nxrd's controller gives it."""
        return {"level": self.state.level, "actions": dict(self.actions)}

    def _usage(self, path: str) -> dict[str, int]:
        """CPU time, throttling and memory of the pod's cgroup, as nxrd reads a leaf's."""
        out: dict[str, int] = {}
        with contextlib.suppress(KernelError, ValueError):
            stat = dict(line.split() for line in self.fs.read(path, "cpu.stat").splitlines())
            out["cpu_usage_usec"] = int(stat["usage_usec"])
            out["cpu_throttled_usec"] = int(stat.get("throttled_usec", 0))
        with contextlib.suppress(KernelError, ValueError):
            out["memory_current"] = int(self.fs.read(path, "memory.current"))
        return out

    def explain(self, key: str) -> dict[str, Any]:
        """`nxrctl explain POD`: per file, what the kubelet gave it, what the agent last
        wrote and why, and what the kernel has now. KeyError: not a pod the agent knows."""
        pod, found = self.pods.get(key), self.found[key]
        if pod is None:
            raise KeyError(key)
        path = pod_cgroup(pod, self.driver)
        base = settings(LadderState(), self.view.spec).files.get(key, {})
        limit = "none" if pod.cpu_limit is None else f"{pod.cpu_limit}m"
        source = {
            "cpu.weight": f"pod spec: requests.cpu {pod.cpu_request}m",
            "cpu.max": f"pod spec: limits.cpu {limit}",
            "cgroup.freeze": "the controller's freeze rungs",
            "cpuset.cpus": "the kubelet's CPU manager (never written by nxr)",
        }
        rows = []
        for name, said in source.items():
            value, why, at = self.written.get((key, name), (None, None, None))
            try:
                kernel: str | None = self.fs.read(path, name)
            except KernelError:
                kernel = None
            planned = base.get(name) if name in WRITTEN else None
            if name == "cgroup.freeze" and key not in self.view.slos:
                planned = "0"
            rows.append({"resource": name, "profile": said, "planned": planned or "-",
                         "written": value, "by": why, "at": at, "kernel": kernel})  # fmt: skip
        rows[-1]["effective"] = format_cpu_list(list(found.cpus))
        return {"name": key, "class": pod.nxr_class, "state": "ready", "cgroup": path,
                "resources": rows}  # fmt: skip

    def close(self) -> None:
        """Every pod back to the kubelet's values, and the sources' threads stopped."""
        self._release("the node agent stops")
        for p in self.pollers.values():
            p.close()

    def _say(self, key: str, line: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.events.record(self.wall(), "agent", "", "", line)

    def _refresh(self, now: float) -> None:
        try:
            pods = parse_pods(self.fetch(), self.node)
        except (OSError, ValueError, PodListError) as e:
            self._say("fetch", f"cannot read the kubelet's pods: {e}")
            return
        self.said.discard("fetch")
        found: dict[str, Found] = {}
        for pod in pods:
            if pod.nxr_class is None:
                continue
            try:
                cpus = self.fs.read(pod_cgroup(pod, self.driver), "cpuset.cpus.effective")
            except KernelError:
                self._say(pod.key, f"pod {pod.key}: no cgroup at {pod_cgroup(pod, self.driver)}")
                continue
            cpu_list = tuple(sorted(parse_cpu_list(cpus))) if cpus else ()
            found[pod.key] = Found(cpu_list, pod.kubelet_weight, pod.kubelet_cpu_max)
        view = node_spec(pods, found, self.c)
        for line in view.problems:
            self._say(line, line)
        if view == self.view:
            return
        self._release("the node's pods changed")
        self.pods = {p.key: p for p in pods}
        self.found = found
        self.view, self.rungs, self.state = view, ladder(view.spec), LadderState()
        self._sources()
        # The kubelet's values on every lower pod, and a freeze that an agent which
        # crashed left behind lifted: no one else freezes a pod.
        for w in view.spec.lowers:
            with contextlib.suppress(KernelError):
                if self.fs.read(pod_cgroup(self.pods[w.name], self.driver), "cgroup.freeze") == "1":
                    self.froze.add(w.name)
        self._enforce("the kubelet's values, when the agent first acts on the pod")
        names = [t.name for t in view.spec.targets]
        lowers = [w.name for w in view.spec.lowers]
        self.events.record(
            self.wall(), "agent", "", "", f"targets {names}, lower pods {lowers}", {}
        )

    def _sources(self) -> None:
        for key in set(self.pollers) - set(self.view.slos):
            self.pollers.pop(key).close()
            self.scraped.pop(key, None)
        for key, slo in self.view.slos.items():
            src = slo.source
            if src.prometheus is not None:
                p = src.prometheus
                url, interval = p.url, p.interval
                self.scraped[key] = Scraped.of(slo.window, p.metric, p.preset, p.labels)
            elif src.probe is not None:
                url, interval = src.probe.url, src.probe.interval
            else:
                continue
            old = self.pollers.get(key)
            if old is None or old.url != url:
                if old is not None:
                    old.close()
                self.pollers[key] = Poller(key, url, interval, max(1.0, interval), self.fetched)

    def _drain(self, now: float) -> None:
        while True:
            try:
                f = self.fetched.get_nowait()
            except queue.Empty:
                return
            scraped = self.scraped.get(f.workload)
            error = f.error
            if scraped is not None and f.body is not None:
                try:
                    scraped.add(now, f.body)
                    self.last_sample[f.workload] = now
                except ScrapeError as e:
                    error = str(e)
            if error:
                self._say(f"source {f.workload}", f"pod {f.workload}: {error}")

    def _latency(self, key: str, percentile: str) -> float | None:
        scraped = self.scraped.get(key)
        return None if scraped is None else scraped.latency(QUANTILES[percentile])

    def _enforce(self, cause: str) -> None:
        want = settings(self.state, self.view.spec)
        for w in self.view.spec.lowers:
            files = {f: v for f, v in want.files.get(w.name, {}).items() if f in WRITTEN}
            self._write(w.name, files, w.name in want.frozen, cause)

    def _release(self, why: str) -> None:
        if self.state.level == 0 and not self.froze:
            return
        base = settings(LadderState(), self.view.spec)
        for w in self.view.spec.lowers:
            files = {f: v for f, v in base.files.get(w.name, {}).items() if f in WRITTEN}
            self._write(w.name, files, False, f"back to the kubelet's values: {why}")
        self.state = LadderState()
        self.events.record(self.wall(), "controller", "", "static", why, {})

    def _write(self, key: str, files: dict[str, str], frozen: bool, cause: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        path = pod_cgroup(pod, self.driver)
        wanted: dict[str, Any] = dict(files)
        if frozen or key in self.froze:
            wanted["cgroup.freeze"] = "1" if frozen else "0"
        try:
            for name, value in wanted.items():
                if self.fs.read(path, name) != value:
                    self.fs.write(path, name, value)
                    self.written[(key, name)] = (value, cause, self.wall())
        except KernelError as e:
            self._say(f"write {key}", f"pod {key}: {e}")
            return
        if frozen:
            self.froze.add(key)
        else:
            self.froze.discard(key)
