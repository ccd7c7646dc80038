"""Several runs of the same set-ups judged together (bench/repeats.sh).

One run of each set-up cannot tell the controller from the test VM's drift: the server's
CPU time per request moved by a third within single runs. So the same set-ups run several
times in one VM boot, in rotated order, and are judged on the sums and medians: windows
over the SLO per set-up, added up over the runs, and per run and phase the batch job's
throughput under each set-up as a share of its throughput pinned, in the same minutes,
and the same over the whole load.

    python -m demo.repeats DIR [DIR...]      (each written by demo.run)
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import statistics
from pathlib import Path

from demo.figures import PhaseFigures, phases, rate
from demo.report import SETTLE, WINDOW, Run, figures, name_width

BASE = "pinned"  # what batch throughput is measured against


def summary(folders: list[Path]) -> str:
    runs = []
    costs: dict[str, dict[str, list[float]]] = {}  # set-up -> rung -> [CPU s, requests]
    for folder in folders:
        meta, client, _served, loaded = figures(folder)
        phs = phases(meta["phases"])
        spans = [(ph.start, ph.end) for ph in phs] + [(phs[0].start, phs[-1].end)]
        batch = {run.name: [rate(run.batch, a, b) for a, b in spans] for run in loaded}
        runs.append((folder, meta, phs, client, batch))
        step = next((ph.start for i, ph in enumerate(phs) if i and ph.rate > phs[i - 1].rate), None)
        if step is not None:
            for run in loaded:
                for group, (cpu, n) in _cost_by_rung(run, step + SETTLE / 2, phs[-1].end).items():
                    had = costs.setdefault(run.name, {}).setdefault(group, [0.0, 0])
                    had[0] += cpu
                    had[1] += n
    asked = [part.partition(":")[0] for part in runs[0][1]["asked"].split(",")]
    setups = list(dict.fromkeys(name for *_, client, _b in runs for name in client))
    w = name_width(dict.fromkeys(setups))
    orders = [",".join(client) for *_, client, _b in runs]
    ow = max([29, *map(len, orders)])
    out = [f"RUN  {'ORDER':<{ow}} LOAD"]
    for (folder, meta, phs, _client, _batch), order in zip(runs, orders, strict=True):
        loads = ", ".join(f"{ph.rate:g}/s" for ph in phs)
        out.append(
            f"{folder.name:4} {order:{ow}} {loads} (capacity {meta['capacity']:.1f}/s, "
            f"SLO {meta['slo_seconds'] * 1000:.0f} ms)"
        )
    for settled, title in (
        (False, f"WINDOWS OVER THE SLO ({WINDOW:g} s, from {SETTLE:g} s in), per run and in all"),
        (True, f"THE SAME, LEAVING OUT THE {SETTLE:g} S AFTER EACH LOAD CHANGE"),
    ):
        out += ["", title]
        for name in setups:
            counts = [_over(client[name], settled) for *_, client, _b in runs if name in client]
            over, of = sum(c for c, _ in counts), sum(n for _, n in counts)
            each = " ".join(f"{c:2}" for c, _ in counts)
            within = f"{1 - over / of:.1%} within" if of else "no windows"
            out.append(f"{name:{w}} {each}   {over} of {of} ({within})")
    out += [
        "",
        "REACTION TO EACH STEP UP: seconds until every later 1 s window is within the SLO, "
        "per run and step (never: the phase ended over it)",
    ]
    for name in setups:
        got = [
            p.reaction
            for *_, client, _b in runs
            if name in client
            for p in client[name]
            if p.steps_up
        ]
        finite = [r for r in got if r is not None]
        worst = "never" if None in got else f"{max(finite):.1f} s" if finite else "-"
        each = " ".join("never" if r is None else f"{r:.1f}" for r in got)
        out.append(f"{name:{w}} {each}   worst {worst}")
    out += ["", f"BATCH THROUGHPUT AS A SHARE OF {BASE.upper()}'S IN THE SAME RUN, per run"]
    for name in setups:
        has = [name in b and BASE in b and any(v is not None for v in b[name]) for *_, b in runs]
        if name == BASE or not all(has):
            continue  # no batch job beside it (solo), or not in every run
        cells = []
        for i, load in enumerate([*asked, "all"]):  # each phase, then the whole load
            shares = [s for *_, b in runs if (s := _share(b[name][i], b[BASE][i])) is not None]
            each = " ".join(f"{s:.2f}" for s in shares)
            median = f"{statistics.median(shares):.2f}" if shares else "-"
            cells.append(f"{load} {each} (median {median})")
        out.append(f"{name:{w}} " + ",  ".join(cells))
    if costs:
        out += [
            "",
            f"THE SERVER'S CPU PER REQUEST FROM {SETTLE / 2:g} S AFTER THE STEP UP, BY RUNG "
            "(requests)",
        ]
        for name in setups:
            groups = sorted(costs.get(name, {}).items(), key=lambda kv: _ORDER.get(kv[0], 9))
            cells = [
                f"{group} {1000 * cpu / n:.1f} ms ({n:.0f})" for group, (cpu, n) in groups if n
            ]
            out.append(f"{name:{w}} " + ",  ".join(cells))
    return "\n".join(out)


def _cost_by_rung(run: Run, start: float, end: float) -> dict[str, tuple[float, int]]:
    """The server's CPU seconds and the requests it answered between start and end, by the
    rung the controller was on (caps and freezes each counted together; a set-up without
    the controller is all `static`). Does a rung make the server's requests cheaper?"""
    answered = sorted(due + v for due, v in run.samples if math.isfinite(v))
    changes = [(t, new) for t, _, new, _ in run.actions]
    out: dict[str, tuple[float, int]] = {}
    for (a, cpu_a), (b, cpu_b) in itertools.pairwise(run.server):
        if a < start or b > end:
            continue
        rung = "static"
        for t, new in changes:
            if t <= (a + b) / 2:
                rung = new
        group = "capped" if rung.startswith("cap-") else "frozen" if "freeze" in rung else rung
        cpu, n = out.get(group, (0.0, 0))
        out[group] = (
            cpu + cpu_b - cpu_a,
            n + bisect.bisect_right(answered, b) - bisect.bisect_right(answered, a),
        )
    return out


_ORDER = {"share": 0, "static": 1, "capped": 2, "frozen": 3}  # the ladder's order


def _over(figs: list[PhaseFigures], settled: bool) -> tuple[int, int]:
    if settled:
        pairs = [(p.settled_over, p.settled_windows) for p in figs]
    else:
        pairs = [(p.over, p.windows) for p in figs]
    return sum(round(share * n) for share, n in pairs), sum(n for _, n in pairs)


def _share(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folders", type=Path, nargs="+")
    args = ap.parse_args()
    for f in args.folders:
        if not (f / "meta.json").exists():
            raise SystemExit(f"repeats: {f} has no meta.json (not a demo.run folder)")
        for name in json.loads((f / "meta.json").read_text())["setups"]:
            if not (f / name / "window.json").exists():
                raise SystemExit(f"repeats: {f / name} is not finished (no window.json)")
    print(summary(args.folders))


if __name__ == "__main__":
    main()
