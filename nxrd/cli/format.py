"""Pure formatters for nxrctl output: plain data in, text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nxrd.plan.classes import THREAD_VARS

if TYPE_CHECKING:  # only for annotations: status output must not load pydantic
    from nxrd.plan.model import Plan, WorkloadPlan
    from nxrd.plan.topology import Topology
from nxrd.profile.units import format_cpu_list, format_duration, format_size


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
    def show(v: str) -> str:
        return v if v == "max" else format_size(int(v))

    low = wl.files.get("memory.min", "0")
    guard = f"min {show(low)}, " if low != "0" else ""
    return f"{guard}max {show(wl.files.get('memory.max', 'max'))}"


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
            for g in topo.gpus
        ]
    else:
        lines.append(f"GPUs: none ({topo.gpu_note or 'none found'})")
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds))


def status_table(workloads: Sequence[Mapping[str, Any]]) -> str:
    """`nxrctl status`: one row per workload."""
    rows = []
    for w in workloads:
        mem = w.get("memory_current")
        limit = w.get("memory_max")
        memory = "-" if mem is None else format_size(int(mem))
        memory += "/" + ("max" if limit is None else format_size(int(limit)))
        rows.append(
            [
                str(w["name"]),
                str(w["class"]),
                str(w["state"]),
                "-" if w.get("pid") is None else str(w["pid"]),
                str(w["cpus"]),
                memory,
                ",".join(str(g) for g in w.get("gpus", [])) or "-",
                str(w.get("restarts", 0)),
                str(w.get("reason", "")),
            ]
        )
    headers = ["WORKLOAD", "CLASS", "STATE", "PID", "CPUS", "MEMORY", "GPUS", "RESTARTS", "WHY"]
    return table(headers, rows)


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
    lines += [f"  {k} = {v}" for k, v in dict(w.get("files", {})).items()]
    lines += [f"  env {k}={v}" for k, v in dict(w.get("env", {})).items()]
    lines += [f"  note: {n}" for n in w.get("notes", [])]
    return "\n".join(lines)


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
