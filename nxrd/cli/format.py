"""Pure formatters for nxrctl output: plain data in, text out."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nxrd.errors import NxrError, TopologyError
from nxrd.model.replicas import group_of
from nxrd.plan.threads import THREAD_VARS

if TYPE_CHECKING:  # only for annotations: status output must not load pydantic
    from nxrd.model.plan import Plan, WorkloadPlan
    from nxrd.model.topology import Topology
from nxrd.model.units import (
    format_cpu_list,
    format_duration,
    format_rate,
    format_size,
    parse_duration,
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _memory(wl: WorkloadPlan) -> str:
    low, high = wl.values.memory_min, wl.values.memory_max
    guard = f"min {format_size(low)}, " if low else ""
    return f"{guard}max {'max' if high is None else format_size(high)}"


def _readable(filename: str, value: str) -> str:
    """Memory byte counts get their binary size beside them."""
    if filename.startswith("memory.") and value.isdigit() and int(value) >= 1 << 20:
        return f"{value} ({format_size(int(value))})"
    return value


def plan_text(plan: Plan) -> str:
    """The plan as a person reads it: a summary table, then each workload's exact values."""
    host = plan.hostname or "host"
    usable = plan.memory - plan.reserved_memory
    out = [
        f"{host}: CPUs {plan.online_cpus}, reserved {plan.reserved_cpus or 'none'}, "
        f"shared pool {plan.shared_cpus or 'none'}",
        f"memory {format_size(plan.memory)}, reserved {format_size(plan.reserved_memory)}, "
        f"guaranteed {format_size(plan.guaranteed_memory)} of {format_size(usable)}",
        "",
    ]
    rows = [
        [
            w.name,
            w.workload_class,
            w.cpus,
            str(w.cpu_count),
            "yes" if w.exclusive else "no",
            _memory(w),
            ",".join(str(g.index) for g in w.gpus) or "-",
            str(w.threads) if w.threads is not None else "-",
        ]
        for w in plan.workloads
    ]
    out.append(table(["WORKLOAD", "CLASS", "CPUS", "N", "EXCL", "MEMORY", "GPUS", "THREADS"], rows))
    for w in plan.workloads:
        out += ["", f"{w.name} -> {w.cgroup}"]
        out += [f"  {k} = {_readable(k, v)}" for k, v in w.files.items()]
        thread_vars = [k for k in w.env if k in THREAD_VARS]
        for k, v in w.env.items():
            if k not in THREAD_VARS:
                out.append(f"  env {k}={v or chr(34) * 2}")
        if thread_vars:
            shown = ", ".join(thread_vars[:3])
            more = f" and {len(thread_vars) - 3} more" if len(thread_vars) > 3 else ""
            out.append(f"  env {shown}{more} = {w.env[thread_vars[0]]}")
        out += [f"  note: {n}" for n in w.notes]
    parents = [plan.root, *plan.classes]
    out += ["", "parents:"]
    out += [
        f"  {p.path or '(subtree root)'}: "
        + ", ".join(f"{k} = {_readable(k, v)}" for k, v in p.files.items())
        for p in parents
    ]
    if plan.warnings:
        out += [""] + [f"warning: {w}" for w in plan.warnings]
    return "\n".join(out)


def topology_text(topo: Topology) -> str:
    """A short human summary of discovered topology."""
    cores = topo.cores()
    smt = max((len(c) for c in cores), default=1)
    lines = [
        f"CPUs {format_cpu_list([c.id for c in topo.cpus])}: {len(cores)} cores, "
        f"{smt} thread(s) per core, {len(topo.nodes)} NUMA node(s)",
        f"memory {format_size(topo.memory)}",
    ]
    if topo.gpus:
        lines += [
            f"GPU {g.index}: {g.name} {format_size(g.memory)} {g.uuid} node {g.node}"
            + (f", {g.compute_mode}" if g.compute_mode != "default" else "")
            + (f", MIG ({len(g.mig_instances)} instances)" if g.mig else "")
            for g in topo.gpus
        ]
    else:
        lines.append(f"GPUs: none ({topo.gpu_note or 'none found'})")
    # what plans are made on, in the planner's own warnings (Topology.within_reach); split
    # cores in shorter words, since the planner's warning leaves out the reserved ones
    try:
        _, limits = topo.within_reach()
    except TopologyError as e:
        limits = [str(e)]
    lines += [f"reach: {limit}" for limit in limits]
    split = topo.split_by_reach()
    if split:
        outside = format_cpu_list(frozenset().union(*split.values()))
        lines.append(
            f"reach: CPUs {format_cpu_list(list(split))} share cores with CPUs beyond it "
            f"({outside}): exclusive workloads get none of them"
        )
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds))


STATUS_HEADERS = [
    "WORKLOAD",
    "CLASS",
    "STATE",
    "PID",
    "CPUS",
    "CPU%",
    "THROTTLED%",
    "MEMORY",
    "PRESSURE CPU/MEM",
    "GPUS",
    "RESTARTS",
    "LATENCY/SLO",
    "WHY",
]


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}".removesuffix(".0")


def _latency(w: Mapping[str, Any]) -> str:
    if w.get("slo_seconds") is None:
        return "-"
    seen = w.get("latency_seconds")
    observed = "-" if seen is None else format_duration(float(seen))
    return f"{observed}/{w.get('slo_percentile')} {format_duration(float(w['slo_seconds']))}"


GPU_USAGE_HEADER = "GPU MEM/UTIL%"


def _gpu_usage(w: Mapping[str, Any]) -> str:
    """Memory its processes hold on its GPUs, and their mean utilization."""
    if w.get("gpu_error"):
        return "no answer"
    mem, util = w.get("gpu_memory_bytes"), w.get("gpu_utilization_percent")
    if mem is None and util is None:
        return "-"
    return f"{'-' if mem is None else format_size(int(mem))}/{_number(util)}"


def _net(w: Mapping[str, Any]) -> str:
    """A shaped workload's egress: sending now / its ceiling."""
    net = w.get("net")
    if not isinstance(net, Mapping):
        return "-"
    rate = net.get("tx_bytes_per_s")
    sending = "-" if rate is None else format_rate(int(rate) * 8)
    return f"{sending}/{format_rate(int(net['egress_bits']))}"


def status_row(w: Mapping[str, Any], gpu_usage: bool = False, net: bool = False) -> list[str]:
    mem, limit = w.get("memory_current"), w.get("memory_max")
    memory = "-" if mem is None else format_size(int(mem))
    memory += "/" + ("max" if limit is None else format_size(int(limit)))
    cpu_p, mem_p = w.get("cpu_pressure"), w.get("memory_pressure")
    psi = "-"
    if cpu_p is not None and mem_p is not None:
        psi = f"{_number(cpu_p['some_avg10'])}/{_number(mem_p['some_avg10'])}"
    state = str(w["state"]) + (" (frozen)" if w.get("frozen") else "")
    return [
        str(w["name"]),
        str(w["class"]),
        state,
        "-" if w.get("pid") is None else str(w["pid"]),
        str(w["cpus"]),
        _number(w.get("cpu_percent")),
        _number(w.get("throttled_percent")),
        memory,
        psi,
        ",".join(str(g) for g in w.get("gpus", [])) or "-",
        *([_gpu_usage(w)] if gpu_usage else []),
        *([_net(w)] if net else []),
        str(w.get("restarts", 0)),
        _latency(w),
        str(w.get("reason", "")),
    ]


def _group_row(
    headers: Sequence[str], group: str, replicas: Sequence[Mapping[str, Any]]
) -> list[str]:
    """A replicated workload's line above its replicas': how many are ready, their restarts."""
    ready = sum(1 for r in replicas if r["state"] == "ready")
    cells = dict.fromkeys(headers, "")
    cells["WORKLOAD"], cells["CLASS"] = group, str(replicas[0]["class"])
    cells["STATE"] = f"{ready}/{len(replicas)} ready"
    cells["RESTARTS"] = str(sum(int(r.get("restarts", 0)) for r in replicas))
    served = [r["requests"] for r in replicas if isinstance(r.get("requests"), Mapping)]
    front = next((r["front"] for r in replicas if isinstance(r.get("front"), Mapping)), None)
    if front is not None:
        inflight = sum(int(r["inflight"]) for r in served)
        cells["WHY"] = (
            f"front: {inflight} in flight, {front['queued']} queued, {front['shed']} shed,"
            f" {front['late']} late"
        )
        if isinstance(wait := front.get("queue_wait_p99"), int | float):
            cells["WHY"] += f", queue wait p99 {wait * 1000:.0f} ms"
    return list(cells.values())


def status_table(
    workloads: Sequence[Mapping[str, Any]], gpus: Sequence[Mapping[str, Any]] = ()
) -> str:
    """`nxrctl status`: one row per workload. CPU% is of one CPU; pressure is avg10 "some".

    GPU usage gets a column only on hosts where some workload has GPUs, and egress (NET:
    sending/ceiling) only where some workload is shaped; a GPU that is quarantined or not
    answering gets a line under the table.
    """
    gpu_usage = any(w.get("gpus") for w in workloads)
    net = any(isinstance(w.get("net"), Mapping) for w in workloads)
    headers = list(STATUS_HEADERS)
    if gpu_usage:
        headers.insert(headers.index("GPUS") + 1, GPU_USAGE_HEADER)
    if net:
        headers.insert(headers.index("RESTARTS"), "NET")
    rows: list[list[str]] = []
    shown: set[str] = set()
    for w in workloads:
        group = group_of(str(w["name"]))
        if group != w["name"] and group not in shown:
            shown.add(group)
            rows.append(
                _group_row(headers, group, [r for r in workloads if group_of(r["name"]) == group])
            )
        row = status_row(w, gpu_usage, net)
        rows.append([f"  {row[0]}" if group != w["name"] else row[0], *row[1:]])
    out = table(headers, rows)
    for g in gpus:
        if g.get("quarantined"):
            out += f"\nGPU {g['index']} ({g['uuid']}): quarantined: {g['quarantined']}"
        elif g.get("error"):
            out += f"\nGPU {g['index']} ({g['uuid']}): {g['error']}"
    return out


def top_screen(workloads: Sequence[Mapping[str, Any]], now: float, width: int) -> str:
    """`nxrctl top`: a summary line, then workloads busiest first, cut to the terminal."""
    import time

    states: dict[str, int] = {}
    for w in workloads:
        states[str(w["state"])] = states.get(str(w["state"]), 0) + 1
    cpu = sum(float(w.get("cpu_percent") or 0) for w in workloads)
    mem = sum(int(w.get("memory_current") or 0) for w in workloads)
    head = (
        f"nxr top - {time.strftime('%H:%M:%S', time.localtime(now))}  "
        f"{len(workloads)} workloads: "
        + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        + f"  CPU {_number(cpu)}%  memory {format_size(mem)}"
    )
    # busiest first, a workload's replicas (and front) together under their workload's line
    group_cpu: dict[str, float] = {}
    for w in workloads:
        group = group_of(str(w["name"]))
        group_cpu[group] = group_cpu.get(group, 0.0) + float(w.get("cpu_percent") or 0)
    busiest = sorted(
        workloads,
        key=lambda w: (
            -group_cpu[group_of(str(w["name"]))],
            group_of(str(w["name"])),
            -float(w.get("cpu_percent") or 0),
        ),
    )
    lines = [head, "", *status_table(busiest).splitlines()]
    return "\n".join(line[:width] for line in lines)


def explain_text(x: Mapping[str, Any]) -> str:
    """`nxrctl explain NAME`."""
    import time

    out = [f"{x['name']} ({x['class']}, {x['state']}), cgroup {x['cgroup']}", ""]
    rows = []
    for r in x["resources"]:
        kernel = r.get("kernel")
        rows.append(
            [
                r["resource"],
                r["profile"],
                _short(r["planned"], 24),
                "-" if r.get("written") is None else _short(r["written"], 24),
                "-" if kernel is None else _short(kernel, 24),
                "-" if r.get("by") is None else str(r["by"]),
                "-"
                if r.get("at") is None
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r["at"]))),
            ]
        )
    headers = ["RESOURCE", "PROFILE", "PLANNED", "WRITTEN", "KERNEL", "LAST WRITTEN BY", "AT"]
    out.append(table(headers, rows))
    effective = [r for r in x["resources"] if r.get("effective") not in (None, r.get("kernel"))]
    for r in effective:
        out.append(f"{r['resource']}: the kernel grants {r['effective']} (effective)")
    if "gpus" not in x:  # a pod, as the Kubernetes node agent explains it
        return "\n".join(out)
    gpus, threads = x.get("gpus", {}), x.get("threads", {})
    out += [
        "",
        f"gpus: profile {gpus.get('profile')}, planned {gpus.get('planned') or 'none'}, "
        f"env {gpus.get('env') or 'none'}"
        + (
            ""
            if gpus.get("devices") is None
            else f", device filter allows {', '.join(gpus['devices']) or 'no /dev/nvidiaN'}"
        ),
        f"threads: profile {threads.get('profile')}, planned {threads.get('planned')}",
    ]
    if (others := x.get("others_on_cores")) is not None:
        out.append(others_line(others))
    return "\n".join(out)


def others_line(o: Mapping[str, Any]) -> str:
    """What else may run on an exclusive workload's cores (docs/isolation.md)."""
    parts = []
    if o["processes"]:
        named = ", ".join(f"{p['command']} {p['pid']} ({p['cgroup']})" for p in o["named"])
        more = ", ..." if o["processes"] > len(o["named"]) else ""
        parts.append(f"{o['processes']} processes: {named}{more}")
    if o["interrupts"]:
        parts.append(f"interrupts {', '.join(o['interrupts'])}")
    if o["kernel_threads"]:
        parts.append(f"{o['kernel_threads']} kernel threads (per-CPU ones cannot move)")
    return "on its cores besides it: " + ("; ".join(parts) if parts else "nothing")


def event_line(e: Mapping[str, Any]) -> str:
    """One event as `nxrctl events` prints it."""
    import time

    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e["time"])))
    return f"{stamp} {e['workload']}: {e['old']} -> {e['new']} ({e['cause']})"


def show_text(w: Mapping[str, Any]) -> str:
    """`nxrctl show NAME`."""
    lines = [f"{w['name']} ({w['class']}): {w['state']} - {w.get('reason', '')}"]
    lines.append(f"  command: {' '.join(w.get('command', []))}")
    lines.append(
        f"  pid: {w.get('pid') or '-'}  restarts: {w.get('restarts', 0)}  "
        f"last exit: {w.get('last_exit') or '-'}"
    )
    lines.append(f"  cgroup: {w['cgroup']}  cpus: {w['cpus']}  threads: {w.get('threads')}")
    lines += _gpu_lines(w)
    if isinstance(net := w.get("net"), Mapping):
        rate = net.get("tx_bytes_per_s")
        sending = "-" if rate is None else format_rate(int(rate) * 8)
        lines.append(
            f"  net: egress {format_rate(int(net['egress_bits']))}, guarantee"
            f" {format_rate(int(net['guarantee_bits']))}, sending {sending},"
            f" {net['dropped_packets']} packets dropped"
        )
    lines += [f"  {k} = {v}" for k, v in dict(w.get("files", {})).items()]
    lines += [f"  env {k}={v}" for k, v in dict(w.get("env", {})).items()]
    lines += [f"  note: {n}" for n in w.get("notes", [])]
    return "\n".join(lines)


def _gpu_lines(w: Mapping[str, Any]) -> list[str]:
    """Per GPU: memory held and utilization of its processes (`show`)."""
    if w.get("gpu_error"):
        return [f"  gpus: {w['gpu_error']}"]
    lines = []
    for u in w.get("gpu_usage", []):
        if u.get("error"):
            lines.append(f"  gpu {u['gpu']}: {u['error']}")
            continue
        mem, util = u.get("memory_bytes"), u.get("utilization_percent")
        pids = ",".join(str(p) for p in u.get("pids", [])) or "none"
        lines.append(
            f"  gpu {u['gpu']}: memory {'unknown' if mem is None else format_size(int(mem))}, "
            f"utilization {'unknown' if util is None else _number(util) + '%'}, pids {pids}"
        )
    return lines


_EFFECTS = {
    "live": "live, no restart",
    "restart": "restarts the workload",
    "next-start": "at its next start",
    "start": "starts",
    "stop": "stops and is removed",
}


def _short(value: str, width: int = 40) -> str:
    value = value or "-"
    return value if len(value) <= width else value[: width - 3] + "..."


def changes_table(changes: Sequence[Mapping[str, str]]) -> str:
    """`nxrctl diff` / `apply`: each change and how it takes effect."""
    if not changes:
        return "no changes"
    rows = [
        [
            c["workload"] or "(parents)",
            c["what"],
            _short(_readable(c["what"], c["old"])),
            _short(_readable(c["what"], c["new"])),
            _EFFECTS.get(c["effect"], c["effect"]),
        ]
        for c in changes
    ]
    return table(["WORKLOAD", "CHANGE", "NOW", "NEW", "TAKES EFFECT"], rows)


def log_since(since: str, now: float) -> str:
    """--since as the local timestamp log lines start with ("2026-12-06T14:00:00"), which
    sorts as text: a duration back from now ("10m"), a local time today ("14:00"), or a
    local date and time ("2026-12-06T14:00", "2026-12-06 14:00:05")."""
    text = since.strip().replace(" ", "T")
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
        text = f"{day}T{text}"
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:T(\d{1,2}):(\d{2})(?::(\d{2}))?)?", text)
    if m:
        date, hour, minute, second = m.groups()
        return f"{date}T{int(hour or 0):02d}:{minute or '00'}:{second or '00'}"
    try:
        seconds = parse_duration(since)
    except ValueError:
        raise NxrError(
            f'--since: expected a duration ("10m") or a local time ("14:00", '
            f'"2026-12-06T14:00") (got {since!r})'
        ) from None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - seconds))
