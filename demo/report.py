"""Print the demo's (or the co-location benchmark's) report from a folder written by
demo.run, and plot latency over time with the SLO line and the controller's actions.

    python -m demo.report DIR [--png FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo import loadgen
from demo.figures import LOST, PhaseFigures, phase_figures, phases, rate
from nxrd.controller.samples import QUANTILES
from nxrd.profile.model import Slo

SETTLE = 4.0  # seconds at the start of each run left out of the window counts
WINDOW = 2.0  # seconds per window when counting windows over the SLO


@dataclass
class Run:
    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)  # (due, latency)
    # (due, latency as the server timed it: from the request's send to its reply)
    served: list[tuple[float, float]] = field(default_factory=list)
    batch: list[tuple[float, float]] = field(default_factory=list)  # (t, items done)
    server: list[tuple[float, float]] = field(default_factory=list)  # (t, CPU seconds)
    nxrd: list[tuple[float, float]] = field(default_factory=list)  # (t, CPU seconds)
    batch_cpu: list[tuple[float, float]] = field(default_factory=list)  # (t, CPU seconds)
    host: list[tuple[float, float]] = field(default_factory=list)  # (t, busy CPU seconds)
    actions: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, old, new, why


def load_run(folder: Path) -> Run:
    """Everything on one time axis: seconds from the load's start."""
    run = Run(folder.name)
    lat = folder / "latency.csv"
    if lat.exists():
        start, run.samples = loadgen.read(lat)
        run.served = _served(folder / "server.latency", [due for due, _ in run.samples])
    else:  # no load (batch alone): time from the window's start
        start = json.loads((folder / "window.json").read_text())["from"]
    run.batch = _series(folder / "batch.progress", start)
    run.server = _series(folder / "server_cpu.txt", start)
    run.nxrd = _series(folder / "nxrd_cpu.txt", start)
    run.batch_cpu = _series(folder / "batch_cpu.txt", start)
    run.host = _series(folder / "host_cpu.txt", start)
    events = folder / "events.jsonl"
    if events.exists():
        offset = json.loads((folder / "window.json").read_text())["wall_minus_mono"]
        for line in events.read_text().splitlines():
            e = json.loads(line)
            if e["workload"] == "controller" and e["old"] != "-":
                t = e["time"] - offset - start
                run.actions.append((t, e["old"], e["new"], e["cause"]))
    return run


def _served(path: Path, due: list[float]) -> list[tuple[float, float]]:
    """The server's log ("ID SECONDS") on the load generator's time axis: request ID is the
    ID-th request due; one the server never answered counts as lost."""
    if not path.exists():
        return []
    took = [LOST] * len(due)
    for line in path.read_text().splitlines():
        rid, _, value = line.partition(" ")
        if rid.isdigit() and int(rid) < len(due):
            took[int(rid)] = float(value)
    return list(zip(due, took, strict=True))


def _series(path: Path, start: float) -> list[tuple[float, float]]:
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines() if line.strip())
    return [(float(r[0]) - start, float(r[1])) for r in rows]


@dataclass(frozen=True)
class Alone:
    """The batch job alone on the host: its throughput and the CPUs it and the host used."""

    rate: float | None  # items per second
    cpu: float | None
    host: float | None


def batch_alone(folder: Path) -> Alone:
    run = load_run(folder / "alone")
    window = json.loads((folder / "alone/window.json").read_text())
    span = window["to"] - window["from"]
    return Alone(rate(run.batch, 0.0, span), rate(run.batch_cpu, 0, span), rate(run.host, 0, span))


Figs = dict[str, list[PhaseFigures]]


def figures(folder: Path) -> tuple[dict[str, Any], Figs, Figs, list[Run]]:
    """The run's meta, each set-up's figures per phase by the client's latencies and by the
    server's (set-ups recorded before the server logged its own are left out of those),
    and the runs."""
    meta = json.loads((folder / "meta.json").read_text())
    slo_name, slo = Slo.model_validate(meta["slo"]).target
    q = QUANTILES[slo_name]
    alone = batch_alone(folder) if (folder / "alone").exists() else Alone(None, None, None)
    meta.update(slo_seconds=slo, slo_name=slo_name, alone=alone)
    phs = phases(meta["phases"])

    def per_phase(run: Run, samples: list[tuple[float, float]]) -> list[PhaseFigures]:
        return [
            phase_figures(
                ph,
                i > 0 and ph.rate > phs[i - 1].rate,
                samples,
                run.batch,
                run.server,
                slo,
                q,
                alone.rate,
                SETTLE,
                WINDOW,
                run.nxrd,
                run.batch_cpu,
                run.host,
            )
            for i, ph in enumerate(phs)
        ]

    client, served, runs = {}, {}, []
    for name in meta["setups"]:
        if name == "alone":
            continue
        run = load_run(folder / name)
        runs.append(run)
        client[name] = per_phase(run, run.samples)
        if run.served:
            served[name] = per_phase(run, run.served)
    return meta, client, served, runs


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return "lost" if math.isinf(v) else f"{v * 1000:.0f} ms"


def _ms1(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _reaction(p: PhaseFigures) -> str:
    if p.reaction is not None:
        return f"{p.reaction:.1f} s"
    return "never" if p.steps_up else "-"


def _ratio(p99: float | None, slo: float) -> str:
    return "-" if p99 is None or math.isinf(p99) else f"{p99 / slo:.2f}"


def table(meta: dict[str, Any], figs: Figs, served: Figs, runs: list[Run]) -> str:
    cpus, slo = meta["cpus"], meta["slo_seconds"]
    load = ", then ".join(f"{p.rate:g}/s for {p.end - p.start:g} s" for p in phases(meta["phases"]))
    if meta.get("capacity"):
        shares = ", ".join(p.partition(":")[0] for p in meta["asked"].split(","))
        load += f" ({shares} of the server's capacity alone, {meta['capacity']:.1f}/s"
        if meta.get("one_at_a_time"):
            load += f"; {meta['one_at_a_time']:.1f}/s one at a time"
        load += ")"
    alone = meta["alone"].rate
    w = name_width(figs)
    asked = meta.get("slo_asked") or ""
    per = f" ({asked[:-1]} times the server's CPU per request)" if asked.endswith("x") else ""
    lines = [
        f"{meta['slo_name']} SLO {slo * 1000:.0f} ms{per}; load {load}; {cpus} CPUs; "
        + (f"batch alone {alone:.1f} items/s" if alone else "no batch-alone run"),
        "",
        f"{'SET-UP':<{w}} {'LOAD':>5} {meta['slo_name'].upper():>8} {'/SLO':>5} "
        f"{'OVER SLO':>12} {'BATCH':>6} {'OF IDLE':>7} {'SERVER':>6} {'UTIL':>5} "
        f"{'REACTION':>8} {'NXRD':>5}",
    ]
    for name, phs in figs.items():
        for p in phs:
            idle = None
            if p.batch is not None and p.server_cpu is not None:
                left = 1 - p.server_cpu / cpus
                idle = p.batch / left if left > 0 else None
            util = None
            if p.batch is not None and p.server_cpu is not None:
                util = p.server_cpu / cpus + p.batch
            server = "-" if p.server_cpu is None else f"{p.server_cpu:.2f}"
            over = f"{p.over:.0%} of {p.windows}"
            daemon = "-" if p.nxrd_cpu is None else f"{p.nxrd_cpu:.2f}"
            lines.append(
                f"{name:<{w}} {p.rate:>4g}/s {_ms(p.p99):>8} {_ratio(p.p99, slo):>5} {over:>12} "
                f"{_pct(p.batch):>6} {_pct(idle):>7} {server:>6} {_pct(util):>5} "
                f"{_reaction(p):>8} {daemon:>5}"
            )
    lines += [
        "",
        f"{meta['slo_name'].upper()}: over the phase; OVER SLO: {WINDOW:g} s windows whose "
        f"{meta['slo_name']} exceeds the SLO (from {SETTLE:g} s in); BATCH: throughput as a "
        "share of batch alone; OF IDLE: of the share the server left idle; SERVER: CPUs "
        "it used; UTIL: server CPUs / CPUs + BATCH; REACTION: from the load step until every "
        "later 1 s window is within the SLO; NXRD: CPUs nxrd itself used.",
    ]
    lines += served_table(meta, figs, served)
    lines += cpu_table(meta, figs)
    for run in runs:
        if run.actions:
            counts: dict[str, int] = {}
            for _, _, new, _ in run.actions:
                counts[new] = counts.get(new, 0) + 1
            lines += ["", f"{run.name}: {len(run.actions)} controller actions"]
            for t, old, new, why in run.actions[:12]:
                lines.append(f"  {t:6.1f} s  {old} -> {new}  ({why})")
            if len(run.actions) > 12:
                lines.append(f"  ... and {len(run.actions) - 12} more")
    return "\n".join(lines)


def served_table(meta: dict[str, Any], client: Figs, served: Figs) -> list[str]:
    """The latency figures again, as the server timed each request: from the moment the
    load generator sent it to the server's reply. On a host this small the load generator
    shares the CPUs with the workloads, and its own delays (sending late, reading the
    reply late) are in the client's figures; a client on another host would not have them."""
    if not served:
        return []
    name = meta["slo_name"]
    slo = meta["slo_seconds"]
    w = name_width(served)
    lines = [
        "",
        f"{'SERVED':<{w}} {'LOAD':>6} {name.upper():>8} {'/SLO':>5} {'OVER SLO':>12} "
        f"{'REACTION':>8} {'CLIENT':>8} {'CPU/REQ':>7}",
    ]
    for setup, phs in served.items():
        for p, c in zip(phs, client[setup], strict=True):
            lines.append(
                f"{setup:<{w}} {f'{p.rate:g}/s':>6} {_ms(p.p99):>8} {_ratio(p.p99, slo):>5} "
                f"{f'{p.over:.0%} of {p.windows}':>12} {_reaction(p):>8} {_ms(c.p99):>8} "
                f"{_ms1(p.cpu_per_request):>7}"
            )
    lines += [
        "",
        f"SERVED: the same figures by the server's own timing, from each request's send to "
        f"its reply; the load generator's delays (sending late, reading the reply late) "
        f"are left out. CLIENT: the {name} above, from when each request was due until the "
        "load generator read the reply. CPU/REQ: the server's CPU time per request it answered "
        "in the phase (its own speed: a slower request here is the server slowed, not "
        "queued).",
    ]
    return lines


def name_width(figs: dict[str, Any]) -> int:
    """The set-up column: as wide as the longest name (those carrying settings are long)."""
    return max([11, *map(len, figs)])


def _cpus(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def cpu_table(meta: dict[str, Any], figs: dict[str, list[PhaseFigures]]) -> list[str]:
    """Where the CPUs went in each phase: what is not the server's share and not batch's is
    nxrd, the rest of the host (load generator, background job, kernel) or idle; WORK/CPU
    says whether batch's CPUs gave the throughput they give it alone."""
    cpus, alone = meta["cpus"], meta["alone"]
    w = name_width(figs)
    if alone.cpu is None and not any(p.host_cpu is not None for ps in figs.values() for p in ps):
        return []  # recorded before these were

    def row(
        name: str,
        load: str,
        server: float | None,
        nxrd: float | None,
        p_batch: float | None,
        batch_cpu: float | None,
        host: float | None,
    ) -> str:
        used = [v for v in (server, nxrd, batch_cpu) if v is not None]
        rest = None if host is None or batch_cpu is None else max(0.0, host - sum(used))
        idle = None if host is None else max(0.0, cpus - host)
        # items per CPU second against alone's: p_batch is already a share of alone's rate
        work = None
        if alone.rate and alone.cpu and p_batch is not None and batch_cpu:
            work = p_batch * alone.cpu / batch_cpu
        return (
            f"{name:<{w}} {load:>6} {_cpus(server):>6} {_cpus(batch_cpu):>6} {_cpus(nxrd):>5} "
            f"{_cpus(rest):>5} {_cpus(idle):>5} {_pct(work):>9}"
        )

    lines = [
        "",
        f"{'CPUs':<{w}} {'LOAD':>6} {'SERVER':>6} {'BATCH':>6} {'NXRD':>5} {'REST':>5} "
        f"{'IDLE':>5} {'WORK/CPU':>9}",
        row("alone", "-", None, None, 1.0 if alone.rate else None, alone.cpu, alone.host),
    ]
    for name, phs in figs.items():
        for p in phs:
            lines.append(
                row(
                    name,
                    f"{p.rate:g}/s",
                    p.server_cpu,
                    p.nxrd_cpu,
                    p.batch,
                    p.batch_cpu,
                    p.host_cpu,
                )
            )
    lines += [
        "",
        "CPUs used over each phase. REST: the rest of the host (load generator, background "
        "job, kernel); WORK/CPU: batch items per CPU second, as a share of what it does alone.",
    ]
    return lines


def plot(meta: dict[str, Any], runs: list[Run], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slo = meta["slo_seconds"] * 1000
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.8 * len(runs)), sharex=True)
    axes = axes if len(runs) > 1 else [axes]
    for ax, run in zip(axes, runs, strict=True):
        ok = [(t, v * 1000) for t, v in run.samples if not math.isinf(v)]
        lost = [t for t, v in run.samples if math.isinf(v)]
        ax.scatter([t for t, _ in ok], [v for _, v in ok], s=3, color="tab:blue", label="latency")
        served = [(t, v * 1000) for t, v in run.served if not math.isinf(v)]
        if served:
            ax.scatter(
                [t for t, _ in served],
                [v for _, v in served],
                s=1,
                color="tab:purple",
                alpha=0.5,
                label="as the server timed it",
            )
        if lost:
            ax.scatter(lost, [slo * 4] * len(lost), s=6, marker="x", color="black", label="lost")
        ax.axhline(slo, color="tab:red", linestyle="--", label=f"SLO {slo:.0f} ms")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(run.name, loc="left", fontsize=10)
        for t, _, new, _ in run.actions:
            ax.axvline(t, color="tab:green", alpha=0.5, linewidth=0.8)
            ax.annotate(
                new,
                (t, 0.97),
                xycoords=("data", "axes fraction"),
                fontsize=6,
                rotation=90,
                va="top",
                color="tab:green",
            )
        for ph in phases(meta["phases"])[1:]:
            ax.axvline(ph.start, color="gray", linewidth=1.2)
        if len(run.batch) > 2:
            bx = ax.twinx()
            pts = []
            for (t0, v0), (t1, v1) in itertools.pairwise(run.batch):
                if t1 - t0 > 1.5:  # no progress written: frozen or stopped
                    pts += [(t0, 0.0), (t1, 0.0)]
                elif t1 > t0:
                    pts.append((t1, (v1 - v0) / (t1 - t0)))
            bx.plot([t for t, _ in pts], [v for _, v in pts], color="tab:orange", linewidth=0.8)
            bx.set_ylabel("batch items/s", color="tab:orange")
            bx.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("seconds from the start of the load (gray: load step)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--png", type=Path, help="write the plot here")
    args = ap.parse_args()
    meta, figs, served, runs = figures(args.folder)
    print(table(meta, figs, served, runs))
    if args.png:
        plot(meta, runs, args.png)
        print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
