"""Rules that relate several fields or workloads; each returns every problem it finds."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from nxrd.errors import Problem
from nxrd.model.classes import CLASSES
from nxrd.model.units import format_cpu_list, format_duration, format_rate, format_size
from nxrd.profile.expand import address_port, url_port
from nxrd.profile.model import Profile, Workload

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_profile(
    profile: Profile, declared: set[str] | None = None, dropped: dict[str, set[str]] | None = None
) -> list[Problem]:
    """All cross-field problems of a profile.

    ``declared`` holds every workload name (and "pool:NAME") of a file whose other
    parts failed validation: references to those are not reported as missing.
    ``dropped`` holds, per workload, invalid keys left out: rules about their absence
    are skipped, since the key is there, only wrong.
    """
    problems: list[Problem] = []
    for name, wl in profile.workloads.items():
        gone = (dropped or {}).get(name, set())
        problems += _check_workload(profile, name, wl, declared or set(), gone)
    problems += _check_after_cycles(profile)
    problems += _check_explicit_overlaps(profile)
    problems += _check_ports(profile)
    problems += _check_controller(profile)
    problems += _check_net(profile)
    return problems


def _check_workload(
    profile: Profile, name: str, wl: Workload, declared: set[str], gone: set[str]
) -> list[Problem]:
    at = f"workloads.{name}"
    out: list[Problem] = []

    def bad(field: str, message: str) -> None:
        out.append(Problem(f"{at}.{field}", message))

    if wl.cpus is not None and wl.cpuset is not None:
        bad("cpus", "set either cpus or cpuset, not both")
    sizing = {"cpus", "cpuset", "class", "exclusive"}
    if wl.is_exclusive and wl.cpus is None and wl.cpuset is None and not gone & sizing:
        why = "latency-critical workloads are exclusive by default" if wl.exclusive is None else ""
        bad(
            "cpus",
            "an exclusive workload needs cpus or cpuset (how many cores it owns)"
            + (f"; {why}, set exclusive = false to share" if why else ""),
        )
    reserved = profile.host.reserved_cpus or frozenset()
    if wl.cpuset is not None and wl.cpuset & reserved:
        bad(
            "cpuset",
            f"CPUs {format_cpu_list(wl.cpuset & reserved)} are in host.reserved_cpus "
            f"({format_cpu_list(reserved)})",
        )

    # memory.max is the hard ceiling; the softer limits and guarantees sit below it.
    if wl.memory_max is not None:
        for field in ("memory_high", "memory_low", "memory_min"):
            value = getattr(wl, field)
            if value is not None and value > wl.memory_max:
                bad(
                    field,
                    f"{format_size(value)} is above memory_max ({format_size(wl.memory_max)})",
                )
    if wl.memory_min is not None and wl.memory_low is not None and wl.memory_min > wl.memory_low:
        bad(
            "memory_min",
            f"{format_size(wl.memory_min)} is above memory_low ({format_size(wl.memory_low)})",
        )

    if wl.cpu_max is not None and wl.workload_class == "latency-critical":
        bad(
            "cpu_max",
            "latency-critical workloads are never capped (throttling stalls hurt the p99 they "
            "protect); drop cpu_max or use another class",
        )
    if wl.cpu_idle and wl.cpu_weight is not None:
        bad(
            "cpu_weight",
            "has no effect with cpu_idle = true (the kernel ignores weights of idle groups)",
        )
    if wl.cpu_idle and wl.workload_class == "latency-critical":
        bad("cpu_idle", "a latency-critical workload cannot run at idle priority")
    if wl.slo is not None and not CLASSES[wl.workload_class].protected:
        kept = ", ".join(p.name for p in CLASSES.values() if p.protected)
        bad(
            "slo",
            f"the controller keeps the SLOs of {kept} workloads only, and this one is "
            f"{wl.workload_class}; make it latency-critical or drop slo",
        )

    if wl.right_size is not None:
        rs = wl.right_size
        if wl.workload_class not in ("batch", "background"):
            bad(
                "right_size",
                f"only batch and background work is right-sized (it may be reclaimed into "
                f"stalls), and this one is {wl.workload_class}; set memory_low to protect it",
            )
        cap = min(v for v in (wl.memory_high, wl.memory_max, 1 << 62) if v is not None)
        if rs.floor > cap:
            bad("right_size.floor", f"{rs.floor} bytes is above its memory limit ({cap} bytes)")
        if rs.interval < 0.5:
            bad("right_size.interval", "at least 500ms: each step needs time to show its cost")

    if wl.pool is None and wl.pool_slots is not None and "pool" not in gone:
        bad("pool_slots", "set without pool")
    if wl.pool is not None:
        pool = profile.pools.get(wl.pool)
        if pool is None and f"pool:{wl.pool}" in declared:
            pass  # declared but invalid: reported where it is declared
        elif pool is None:
            known = ", ".join(sorted(profile.pools)) or "none declared"
            bad("pool", f"no pool named {wl.pool!r} (pools: {known})")
        elif (wl.pool_slots or 1) > pool.slots:
            bad("pool_slots", f"{wl.pool_slots} is more than pool {wl.pool!r} has ({pool.slots})")

    for i, dep in enumerate(wl.after):
        if dep == name:
            bad(f"after[{i}]", "a workload cannot wait for itself")
        elif dep not in profile.workloads and dep not in declared:
            bad(f"after[{i}]", f"no workload named {dep!r}")

    gpu_list = wl.gpus if isinstance(wl.gpus, tuple) else ()
    if len(set(gpu_list)) != len(gpu_list):
        bad("gpus", "lists the same GPU twice")
    has_gpus = bool(wl.gpus) or "gpus" in gone
    if wl.gpu_memory is not None and not has_gpus:
        bad("gpu_memory", "set without gpus")
    if wl.gpu_shared and not has_gpus:
        bad("gpu_shared", "set without gpus")
    if wl.gpu_compute is not None and not wl.gpu_shared:
        bad("gpu_compute", "only for gpu_shared workloads (an MPS share of a shared GPU)")
    elif wl.gpu_compute is not None and not profile.host.mps:
        bad("gpu_compute", "needs [host] mps = true (MPS enforces it)")
    if wl.gpu_memory_policy is not None and wl.gpu_memory is None and "gpu_memory" not in gone:
        bad("gpu_memory_policy", "set without gpu_memory (the budget it enforces)")

    for key in wl.env:
        if not _ENV_NAME_RE.match(key):
            bad("env", f"{key!r} is not a valid environment variable name")
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if has_gpus and var in wl.env:
            bad("env", f"{var} is set by nxr from gpus; remove it from env")
    for key in ("user", "group"):
        value = getattr(wl, key)
        # the system's lookups refuse these outright (pwd raises ValueError on a NUL)
        if value is not None and (not value.strip() or any(c in value for c in "\x00:\n")):
            bad(key, f"{value!r} is not a valid {key} name")
    if wl.cwd is not None and not os.path.isabs(wl.cwd):
        bad("cwd", f"must be an absolute path (got {wl.cwd!r})")

    if wl.ready is not None:
        given = [k for k in ("http", "tcp", "exec") if getattr(wl.ready, k) is not None]
        if len(given) != 1:
            bad(
                "ready",
                "give exactly one of http, tcp, exec"
                + (f" (got {', '.join(given)})" if given else ""),
            )
    if wl.slo is not None:
        targets = [k for k in ("p50", "p90", "p95", "p99") if getattr(wl.slo, k) is not None]
        if len(targets) != 1:
            bad(
                "slo",
                "give exactly one target of p50, p90, p95, p99"
                + (f" (got {', '.join(targets)})" if targets else ""),
            )
        src = wl.slo.source
        sources = [
            k
            for k in ("prometheus", "probe", "push", "front")
            if getattr(src, k) not in (None, False)
        ]
        if len(sources) != 1:
            bad("slo.source", "give exactly one of prometheus, probe, push = true, front = true")
        if src.front and wl.serve is None:
            bad("slo.source.front", "needs serve: the front whose requests it times")
        prom = src.prometheus
        if prom is not None and (prom.metric is None) == (prom.preset is None):
            bad("slo.source.prometheus", "give exactly one of metric, preset")
    if wl.restart.max_delay < wl.restart.delay:
        bad("restart.max_delay", "is shorter than restart.delay")
    if wl.replicas is not None:
        _check_replicas(wl, bad)
    if wl.serve is not None and wl.port is None:
        bad("serve", "the front needs port: where the workload (replica i: port + i) listens")
    return out


def _check_replicas(wl: Workload, bad: Callable[[str, str], None]) -> None:
    """What cannot be given to every replica alike: its own cores, GPUs and address."""
    assert wl.replicas is not None
    if wl.cpuset is not None and wl.is_exclusive:
        bad("cpuset", "every replica would get the same exclusive CPUs: set cpus (per replica)")
    if isinstance(wl.gpus, tuple) and not wl.gpu_shared:
        bad("gpus", "every replica would get the same GPUs: give a count (per replica)")
    if wl.port is not None and wl.port + wl.replicas - 1 > 65535:
        bad("port", f"replica {wl.replicas - 1} would listen on {wl.port + wl.replicas - 1}")
    addresses = {
        "ready.http": wl.ready and wl.ready.http and url_port(wl.ready.http),
        "ready.tcp": wl.ready and wl.ready.tcp and address_port(wl.ready.tcp),
    }
    if wl.slo is not None and wl.slo.source.prometheus is not None:
        addresses["slo.source.prometheus.url"] = url_port(wl.slo.source.prometheus.url)
    if wl.slo is not None and wl.slo.source.probe is not None:
        addresses["slo.source.probe.url"] = url_port(wl.slo.source.probe.url)
    for field, port in addresses.items():
        if port is not None and port != wl.port:
            bad(
                field,
                f"replicas are each checked at their own port: set port = {port} (replica i "
                "listens on port + i) and name it here"
                if wl.port is None
                else f"names port {port}, not the workload's port ({wl.port}): replica i is "
                "checked at port + i",
            )


def _check_ports(profile: Profile) -> list[Problem]:
    """Two workloads (or replicas) cannot listen on one port."""
    problems: list[Problem] = []
    taken: dict[int, str] = {}
    for name, wl in profile.workloads.items():
        ranges = {"port": range(wl.port, wl.port + (wl.replicas or 1)) if wl.port else range(0)}
        if wl.serve is not None:
            ranges["serve.port"] = range(wl.serve.port, wl.serve.port + 1)
        for key, ports in ranges.items():
            for port in ports:
                if port in taken:
                    problems.append(
                        Problem(f"workloads.{name}.{key}", f"port {port} is also {taken[port]}'s")
                    )
                    break
                taken[port] = f"{name!r}" + (" front" if key == "serve.port" else "")
    return problems


def _check_controller(profile: Profile) -> list[Problem]:
    c = profile.controller
    problems = []
    if c.relax_above <= c.act_below:  # else one slack both acts and relaxes: a climb a tick
        problems.append(
            Problem(
                "controller.relax_above",
                f"must be above act_below ({c.relax_above:g} <= {c.act_below:g}): the band "
                "between them is where the controller holds its rung",
            )
        )
    if 0 < c.probe_after < c.cooldown:
        problems.append(
            Problem(
                "controller.probe_after",
                'must be "0s" (no tries) or at least the cooldown '
                f"({format_duration(c.probe_after)} < {format_duration(c.cooldown)})",
            )
        )
    return problems


IFNAMSIZ = 16  # the kernel's limit on an interface name, with its NUL


def _check_net(profile: Profile) -> list[Problem]:
    """Egress shaping: interfaces named as the kernel allows, a floor under its ceiling,
    floors that fit in the link when the profile gives it (planning checks a discovered
    link), and no shaping without an interface to shape."""
    net = profile.host.net
    problems = []
    for name in net.interfaces:
        if (
            not name
            or len(name) >= IFNAMSIZ
            or any(c in name for c in "/: \t\n")
            or name
            in (
                ".",
                "..",
            )
        ):
            problems.append(Problem("host.net.interfaces", f"{name!r} is not an interface name"))
    if len(set(net.interfaces)) != len(net.interfaces):
        problems.append(Problem("host.net.interfaces", "an interface is listed twice"))
    shaped = {n: wl.net for n, wl in profile.workloads.items() if wl.net is not None}
    for name, wl_net in shaped.items():
        at = f"workloads.{name}.net"
        if not net.interfaces:
            problems.append(
                Problem(at, "no interface to shape: list them in [host.net] interfaces")
            )
        if wl_net.egress is None and wl_net.guarantee is None:
            problems.append(Problem(at, "give egress (a ceiling), guarantee (a floor) or both"))
        if wl_net.guarantee and wl_net.egress and wl_net.guarantee > wl_net.egress:
            problems.append(
                Problem(
                    f"{at}.guarantee",
                    f"is above egress ({format_rate(wl_net.guarantee)} >"
                    f" {format_rate(wl_net.egress)})",
                )
            )
        for key in ("egress", "guarantee"):
            rate = getattr(wl_net, key)
            if net.link is not None and rate is not None and rate > net.link:
                problems.append(
                    Problem(
                        f"{at}.{key}",
                        f"{format_rate(rate)} is above host.net.link ({format_rate(net.link)})",
                    )
                )
    # a replica is shaped as its own workload: each has the floor
    floors = sum(
        (n.guarantee or 0) * (profile.workloads[w].replicas or 1) for w, n in shaped.items()
    )
    if net.link is not None and floors > net.link:
        problems.append(
            Problem(
                "host.net.link",
                f"the workloads' guarantees add up to {format_rate(floors)}, more than the"
                f" link's {format_rate(net.link)}",
            )
        )
    return problems


def _check_after_cycles(profile: Profile) -> list[Problem]:
    graph = {
        n: [d for d in w.after if d in profile.workloads and d != n]
        for n, w in profile.workloads.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    problems: list[Problem] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                problems.append(
                    Problem(f"workloads.{node}.after", "dependency cycle: " + " -> ".join(cycle))
                )
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return problems


def _check_explicit_overlaps(profile: Profile) -> list[Problem]:
    """Clashes visible without knowing the host: explicit exclusive cpusets and GPU ids."""
    problems: list[Problem] = []
    for name, wl in profile.workloads.items():
        if wl.cpuset is None:
            continue
        for other_name, other in profile.workloads.items():
            if other_name >= name or other.cpuset is None:
                continue
            common = wl.cpuset & other.cpuset
            if common and (wl.is_exclusive or other.is_exclusive):
                problems.append(
                    Problem(
                        f"workloads.{name}.cpuset",
                        f"CPUs {format_cpu_list(common)} are also given to {other_name!r}, "
                        "and one of the two is exclusive",
                    )
                )
    gpu_owner: dict[int | str, tuple[str, bool]] = {}
    for name, wl in profile.workloads.items():
        if not isinstance(wl.gpus, tuple):
            continue
        for gpu in dict.fromkeys(wl.gpus):  # a repeat within one workload is reported above
            if gpu in gpu_owner and not (wl.gpu_shared and gpu_owner[gpu][1]):
                problems.append(
                    Problem(
                        f"workloads.{name}.gpus",
                        f"GPU {gpu} is also given to {gpu_owner[gpu][0]!r}; set gpu_shared = true "
                        "on both to share it",
                    )
                )
            gpu_owner.setdefault(gpu, (name, wl.gpu_shared))
    return problems
