"""Run the demo's workloads under one or more set-ups and record what happened, for
demo.report. Needs root and a cgroup v2 host (scripts/demo.sh runs it inside the test
VM when this host has none).

Set-ups:
    alone       the batch job by itself on every CPU: the capacity batch throughput is
                measured against (no load)
    solo        the server by itself on one CPU with one intra-op thread, as nxr runs it, with
                no batch or background work: what no rung of the controller can improve on
    plain       plain processes, no cgroups, default thread counts (no nxr)
    weights     cgroups with static cpu.weight only (1000 server, 50 batch, idle background)
                and default thread counts, as systemd's CPUWeight= would give
    pinned      nxrd with the profile, controller off: exclusive cores, sized threads
    capped      pinned, with batch and background held at the controller's cap-25% rung
                throughout (cpu.max at a quarter of their CPUs): what that rung does to
                the server's latency, with no controller deciding when
    controller  nxrd with the profile and its controller on

A controller set-up may carry settings of the profile's [controller] table after "+", to
judge them against the profile's in one run: controller+probe_after=0s+act_below=0.1.

    python -m demo.run --profile profiles/demo.toml --setups pinned,controller \\
        --phases 8:20,24:40 --out DIR

A rate with "%" is a share of the server's capacity on this host, measured first: the
requests the server alone on one CPU answers per CPU second under open-loop load
(`--phases 20%:20,60%:30`). Hosts (and the test VM from one day to the next) differ
twofold in speed; the same share of capacity puts the same pressure on the server
everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import ValidationError

from demo import loadgen
from demo.figures import LOST, of_capacity
from nxrd.errors import ProfileError
from nxrd.kernel.cgroupfs import CgroupFS, LinuxCgroupFS
from nxrd.profile import parse_profile
from nxrd.profile.model import Control, ControllerSettings, Slo

# The host's cgroup v2 tree, for the set-ups without nxr ("weights"), through nxrd's kernel
# layer: the demo does no cgroupfs I/O of its own.
CGROUP2 = LinuxCgroupFS("/sys/fs/cgroup")
WEIGHTS = "nxr-demo-weights"  # its cgroups, under CGROUP2
WEIGHT_GROUPS = {"server": "1000", "batch": "50", "bg": None}  # cpu.weight; None: cpu.idle
# The folder that holds the demo package: its workloads run there (cwd), where
# `python3 -m demo.ocr_server` finds it (the demo is not installed with nxr).
ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path("/run/nxr-demo")  # the profile's workloads write their progress here
BIN = Path(sys.executable).parent
ONE_THREAD = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
SAMPLED = {"server": "chat", "batch": "embed"}  # CPU time sampled: the profile's workloads
SETUPS = ("alone", "solo", "plain", "weights", "pinned", "capped", "controller")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", default="profiles/demo.toml")
    ap.add_argument("--setups", default="alone,pinned,controller")
    ap.add_argument(
        "--phases", default="8:20,24:40", help="load: RATE:SECONDS,... (RATE or SHARE%%)"
    )
    ap.add_argument("--alone", type=float, default=15.0, help="seconds of the alone set-up")
    ap.add_argument(
        "--slo",
        help="the server's SLO target in place of the profile's: a duration (\"200ms\") or "
        '"10x", ten times the CPU a request takes the server alone (measured first)',
    )
    ap.add_argument("--out")
    ap.add_argument(
        "--check",
        action="store_true",
        help="only check --setups, --slo and --phases (before a VM boots for them), then exit",
    )
    args = ap.parse_args()
    if not args.check and not args.out:
        ap.error("the following arguments are required: --out")

    text = Path(args.profile).read_text()
    for setup in args.setups.split(","):  # said before the minute calibrating takes
        base, _, settings = setup.partition("+")
        if base not in SETUPS:
            raise SystemExit(f"demo: unknown set-up {base!r} (see --help)")
        if settings and base != "controller":
            raise SystemExit(f"demo: {setup}: only the controller set-up takes settings")
        tuned(text, settings)
    if args.slo:
        with_slo(text, args.slo, 1.0)  # a bad --slo is said before the minute calibrating takes
    checked_phases(args.phases)
    if args.check:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = tomllib.loads(text)
    load = args.phases
    capacity = one_at_a_time = None
    if "%" in load or (args.slo or "").endswith("x"):
        capacity, one_at_a_time = calibrate(workload_commands(text)["chat"], out)
        checked_phases(load, capacity)  # a share too small for 0.1/s of this server
        load = of_capacity(load, capacity)
        print(
            f"demo: the server alone answers {capacity:.1f} requests per CPU second under "
            f"load ({one_at_a_time:.1f}/s one at a time); load {load}"
        )
    if args.slo:
        text = with_slo(text, args.slo, capacity)
        profile = tomllib.loads(text)
        target = Slo.model_validate(profile["workloads"]["chat"]["slo"]).target
        print(f"demo: the server's SLO: {target[0]} {target[1] * 1000:.0f} ms")
    meta = {
        "profile": args.profile,
        "phases": load,
        "asked": args.phases,
        "capacity": capacity,
        "one_at_a_time": one_at_a_time,
        "cpus": len(os.sched_getaffinity(0)),
        "slo": profile["workloads"]["chat"]["slo"],
        "slo_asked": args.slo,
        "setups": args.setups.split(","),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    for setup in meta["setups"]:
        print(f"demo: set-up {setup}", flush=True)
        Setup(setup, text, out / setup, load, args.alone).run()


def checked_phases(text: str, capacity: float | None = None) -> str:
    """--phases as given, once every part reads as RATE:SECONDS, a rate per second (at
    least 0.1, the load's resolution) or a share of the server's capacity ("60%"), and a
    length, both finite and above zero; with the measured capacity, a share must come to
    0.1/s too."""
    for part in text.split(","):
        rate, _, seconds = part.partition(":")
        try:
            r, s = float(rate.removesuffix("%")), float(seconds)
            ok = math.isfinite(r) and math.isfinite(s) and s > 0
            ok = ok and (r > 0 if rate.endswith("%") else r >= 0.1)
        except ValueError:
            ok = False
        if not ok:
            raise SystemExit(
                f"demo: --phases: {part!r} is not RATE:SECONDS with a rate of at least 0.1/s "
                "or a share above 0%, and seconds above 0 (8:20,24:40 or 20%:20,60%:30)"
            )
        if rate.endswith("%") and capacity is not None and r / 100 * capacity < 0.1:
            raise SystemExit(
                f"demo: --phases: {part!r} is {r / 100 * capacity:.2f}/s of the measured "
                f"{capacity:.1f}/s, under 0.1/s"
            )
    return text


class Setup:
    def __init__(self, name: str, profile: str, out: Path, phases: str, alone: float) -> None:
        self.name, self.profile, self.out, self.phases, self.alone = (
            name,
            profile,
            out,
            phases,
            alone,
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nxrd: subprocess.Popen[bytes] | None = None
        self.cgroup: str | None = None  # under CGROUP2

    def run(self) -> None:
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        RUN_DIR.mkdir(parents=True)
        commands = workload_commands(self.profile)
        try:
            if self.name.partition("+")[0] in ("pinned", "capped", "controller"):
                self.start_nxrd()
            elif self.name == "alone":
                self.spawn(commands["embed"], None)
            elif self.name == "solo":
                self.spawn(commands["chat"], None, one_cpu=True)
            elif self.name in ("plain", "weights"):
                self.cgroup = make_weight_groups(CGROUP2) if self.name == "weights" else None
                for wl, group in (("chat", "server"), ("embed", "batch"), ("indexer", "bg")):
                    self.spawn(commands[wl], f"{self.cgroup}/{group}" if self.cgroup else None)
            if self.name != "solo":
                wait_for(lambda: line_count(RUN_DIR / "batch.progress") >= 2, 300, "batch job")
            t0 = time.monotonic()
            if self.name == "alone":
                self.sample_cpu(lambda: time.monotonic() - t0 < self.alone)
            else:
                self.load()
            (self.out / "window.json").write_text(
                json.dumps({"from": t0, "to": time.monotonic(), "wall_minus_mono": wall_offset()})
            )
            if self.nxrd is not None:
                events = nxrctl("events", "-o", "json")
                (self.out / "events.jsonl").write_text(events)
        finally:
            self.stop()
            for f in (*RUN_DIR.glob("*.progress"), RUN_DIR / "server.latency"):
                if f.exists():
                    shutil.copy(f, self.out / f.name)

    def load(self) -> None:
        """The load generator, from the harness's own cgroup (like a client elsewhere),
        while the server's CPU time is sampled."""
        gen = subprocess.Popen(
            [
                *(sys.executable, "-m", "demo.loadgen"),
                *("--phases", self.phases, "--out", str(self.out / "latency.csv")),
            ]
        )
        self.sample_cpu(lambda: gen.poll() is None)
        if gen.returncode != 0:
            raise SystemExit(f"demo: the load generator failed ({gen.returncode})")

    def sample_cpu(self, going: Callable[[], bool]) -> None:
        """Every half second while going(): the CPU seconds of the server, the batch job
        and nxrd so far, and the host's busy CPU seconds (what the rest is made of)."""
        daemon = psutil.Process(self.nxrd.pid) if self.nxrd is not None else None
        commands = workload_commands(self.profile)
        modules = {name: module(commands[wl]) for name, wl in SAMPLED.items()}
        procs: dict[str, psutil.Process | None] = {"server": None, "batch": None}
        with contextlib.ExitStack() as files:
            out = {
                name: files.enter_context((self.out / f"{name}_cpu.txt").open("w"))
                for name in ("server", "batch", "nxrd", "host")
            }
            while going():
                for name, proc in procs.items():
                    if proc is None or not proc.is_running():
                        procs[name] = find(modules[name])  # a scan of /proc: not always
                now = f"{time.monotonic():.3f}"
                for name, proc in (*procs.items(), ("nxrd", daemon)):
                    if proc is not None:
                        with contextlib.suppress(psutil.Error):  # its workers: batch's only
                            used = cpu_seconds(proc, children=name == "batch")
                            out[name].write(f"{now} {used:.3f}\n")
                h = psutil.cpu_times()
                busy = h.user + h.nice + h.system + h.irq + h.softirq + h.steal
                out["host"].write(f"{now} {busy:.3f}\n")
                time.sleep(0.5)

    def spawn(self, argv: list[str], cgroup: str | None, one_cpu: bool = False) -> None:
        self.procs.append(launch(argv, cgroup, one_cpu))

    def start_nxrd(self) -> None:
        base, _, settings = self.name.partition("+")
        enabled = "true" if base == "controller" else "false"
        text = tuned(self.profile, "+".join(filter(None, (f"enabled={enabled}", settings))))
        if self.name == "capped":
            text = capped(text)
        text = in_root(text.replace('"python3"', json.dumps(sys.executable)))
        state = self.out / "state"
        (self.out / "profile.toml").write_text(text)
        self.nxrd = subprocess.Popen(
            [
                *(str(BIN / "nxrd"), "--profile", str(self.out / "profile.toml")),
                *("--state-dir", str(state), "--socket", str(RUN_DIR / "nxrd.sock")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.out / "nxrd.log").open("wb"),
        )

    def stop(self) -> None:
        if self.nxrd is not None:
            self.nxrd.send_signal(signal.SIGTERM)
            try:
                self.nxrd.wait(120)
            except subprocess.TimeoutExpired:
                self.nxrd.kill()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if self.cgroup is not None:
            remove_weight_groups(CGROUP2, self.cgroup)


def capped(profile: str, share: int = 25) -> str:
    """The demo's profile with its batch and background workloads capped as the
    controller's cap-N% rung caps them: batch's cpu.max at N% of the CPUs it runs on (all
    but the server's), background's at the rung's floor (control.min_cpu), since it runs
    beside batch. For profiles/demo.toml only: one workload of each class, no cpu_max or
    control of their own, and N% of their CPUs above the floor."""
    server = int(tomllib.loads(profile)["workloads"]["chat"]["cpus"])
    floor = Control.model_fields["min_cpu"].default
    caps = {
        "batch": f"{share * (len(os.sched_getaffinity(0)) - server)}%",
        "background": f"{round(100 * floor)}%",
    }
    for cls, cap in caps.items():
        line = f'class = "{cls}"\n'
        if line not in profile:
            raise SystemExit(f"demo: no {cls} workload in the profile to cap")
        profile = profile.replace(line, f'{line}cpu_max = "{cap}"\n', 1)
    return profile


def _table(profile: str, header: str) -> tuple[int, int] | None:
    """Where the body of the TOML table `header` ("workloads.chat") lies in the text."""
    m = re.search(rf"(?m)^\[{re.escape(header)}\][ \t]*(#.*)?\r?\n", profile)
    if m is None:
        return None
    after = re.search(r"(?m)^[ \t]*\[", profile[m.end() :])
    return m.end(), m.end() + after.start() if after else len(profile)


def with_slo(profile: str, slo: str, capacity: float | None) -> str:
    """The demo's profile with the server's SLO target set to `slo`: a duration, or "Nx",
    N times the CPU seconds a request takes the server (1 / capacity). The test VM's speed
    varies twofold from one day to the next; a load in shares of capacity keeps the
    pressure the same, and an SLO in requests' worth of CPU keeps the same room under it."""
    bad = f"demo: --slo {slo}: not a duration (200ms) or a positive multiple (10x)"
    chat = tomllib.loads(profile).get("workloads", {}).get("chat", {})
    span = _table(profile, "workloads.chat")
    if "slo" not in chat or span is None:
        raise SystemExit("demo: the profile's server, [workloads.chat], has no slo to set")
    name = Slo.model_validate(chat["slo"]).target[0]
    new = slo
    if slo.endswith("x"):
        if capacity is None:
            raise SystemExit(f"demo: --slo {slo} needs the server's capacity, measured first")
        try:
            times = float(slo[:-1])
        except ValueError:
            raise SystemExit(bad) from None
        if not 0 < times < math.inf:
            raise SystemExit(bad)
        new = f"{max(1, round(times / capacity * 1000))}ms"
    body, found = re.subn(
        rf'\b{name}\s*=\s*("[^"\n]*"|[0-9.eE+-]+)',
        lambda _m: f"{name} = {json.dumps(new)}",
        profile[span[0] : span[1]],
        count=1,
    )
    if not found:
        raise SystemExit(f"demo: no {name} = ... in [workloads.chat] to set the SLO in")
    rewritten = profile[: span[0]] + body + profile[span[1] :]
    try:
        Slo.model_validate(tomllib.loads(rewritten)["workloads"]["chat"]["slo"])
    except (ValidationError, tomllib.TOMLDecodeError):
        raise SystemExit(bad) from None
    return rewritten


def in_root(profile: str) -> str:
    """The profile with each of its workloads run in ROOT (cwd), where `python3 -m
    demo.ocr_server` finds the demo package: nxrd gives a workload a clean environment (no
    PYTHONPATH of the harness's). A workload with a cwd of its own keeps it."""
    for name, spec in tomllib.loads(profile).get("workloads", {}).items():
        if "cwd" in spec:
            continue
        span = _table(profile, f"workloads.{name}")
        if span is None:
            raise SystemExit(f"demo: no [workloads.{name}] table in the profile to set cwd in")
        profile = f"{profile[: span[0]]}cwd = {json.dumps(str(ROOT))}\n{profile[span[0] :]}"
    return profile


def tuned(profile: str, settings: str) -> str:
    """The profile with `settings` ("probe_after=0s+act_below=0.1") in its [controller]
    table, each in place of the profile's line for it or added."""
    span = _table(profile, "controller")
    if span is None:  # a table of its own at the end: keys before it would join another
        profile = profile.rstrip("\n") + "\n\n[controller]\n"
        span = (len(profile), len(profile))
    table = profile[span[0] : span[1]]
    for setting in filter(None, settings.split("+")):
        key, _, value = setting.partition("=")
        if key not in ControllerSettings.model_fields or not value:
            raise SystemExit(f"demo: {setting!r} is not KEY=VALUE of a [controller] setting")
        try:
            tomllib.loads(f"v = {value}")  # a number or a boolean as it is
        except tomllib.TOMLDecodeError:
            value = json.dumps(value)  # a duration: a TOML string
        line = f"{key} = {value}"
        pattern = rf"(?m)^[ \t]*{key}[ \t]*=.*$"
        # the line as it is: a replacement string would read its backslashes as escapes
        table, found = re.subn(pattern, line.replace("\\", "\\\\"), table, count=1)
        if not found:
            table = f"{line}\n{table}"
    text = profile[: span[0]] + table + profile[span[1] :]
    try:
        parse_profile(text)
    except ProfileError as e:
        raise SystemExit(f"demo: {settings}: {e.lines()[0]}") from None
    return text


def launch(
    argv: list[str], cgroup: str | None = None, one_cpu: bool = False
) -> subprocess.Popen[bytes]:
    """A workload in its own session (killed with its group), in `cgroup` (under CGROUP2)
    if given; with one_cpu, on this host's first CPU with one intra-op thread, as nxr runs the
    server. It runs in the harness's own directory and environment, where it found the
    demo package."""
    env = {**os.environ, **(ONE_THREAD if one_cpu else {})}
    cpu = min(os.sched_getaffinity(0))

    def enter() -> None:
        os.setsid()
        if cgroup is not None:
            CGROUP2.move(cgroup, 0)  # this process, before it runs the workload
        if one_cpu:
            os.sched_setaffinity(0, {cpu})

    return subprocess.Popen(argv, preexec_fn=enter, env=env, stdout=subprocess.DEVNULL)


def calibrate(
    server: list[str], out: Path, port: int = 7070, requests: int = 50, seconds: float = 10.0
) -> tuple[float, float]:
    """The server's capacity alone on one CPU with one intra-op thread (as nxr runs it):
    the requests it answers per CPU second under open-loop load (for `seconds`) at half the
    rate that one request at a time suggests; and that rate (requests per second, one at a
    time), which overstates it: between requests under load the server sleeps and wakes,
    and each request costs more (20-40% more CPU in the test VM)."""
    proc = launch(server, one_cpu=True)

    def alive() -> None:
        if proc.poll() is not None:  # then whatever answers on the port is not it
            raise SystemExit(f"demo: the server exited ({proc.returncode}) while calibrating")

    try:
        end = time.monotonic() + 300
        while True:  # a few seconds at a time, so that a server that died is said at once
            alive()
            try:
                loadgen.wait_for_server(port, 2)
                break
            except SystemExit:
                if time.monotonic() > end:
                    raise
        try:
            one_at_a_time = 1 / loadgen.service_time(port, requests)
        except OSError:
            alive()
            raise SystemExit("demo: the server stopped answering while calibrating") from None
        server_cpu = psutil.Process(proc.pid)
        before = sum(server_cpu.cpu_times()[:2])
        latency = out / "calibration.csv"
        subprocess.run(
            [
                *(sys.executable, "-m", "demo.loadgen", "--port", str(port)),
                *("--phases", f"{one_at_a_time / 2:.1f}:{seconds}", "--out", str(latency)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        alive()
        used = sum(server_cpu.cpu_times()[:2]) - before
        answered = sum(v != LOST for _, v in loadgen.read(latency)[1])
        if used <= 0 or not answered:
            raise SystemExit("demo: the server answered nothing under load while calibrating")
        return answered / used, one_at_a_time
    finally:
        proc.kill()
        proc.wait()


def workload_commands(profile: str) -> dict[str, list[str]]:
    """The profile's commands, run with this Python, for the set-ups without nxr."""
    workloads = tomllib.loads(profile)["workloads"]
    return {
        name: [sys.executable if a == "python3" else a for a in spec["command"]]
        for name, spec in workloads.items()
    }


def make_weight_groups(fs: CgroupFS) -> str:
    """The "weights" set-up's cgroups (WEIGHTS, under fs's root), each group in
    WEIGHT_GROUPS with its static cpu.weight, or cpu.idle; made if missing."""
    fs.write("", "cgroup.subtree_control", "+cpu")
    if not fs.exists(WEIGHTS):
        fs.mkdir(WEIGHTS)
    fs.write(WEIGHTS, "cgroup.subtree_control", "+cpu")
    for group, weight in WEIGHT_GROUPS.items():
        rel = f"{WEIGHTS}/{group}"
        if not fs.exists(rel):
            fs.mkdir(rel)
        if weight is None:
            fs.write(rel, "cpu.idle", "1")
        else:
            fs.write(rel, "cpu.weight", weight)
    return WEIGHTS


def remove_weight_groups(fs: CgroupFS, root: str, timeout: float = 30.0) -> None:
    """The "weights" set-up's cgroups gone, once their processes are (killed processes
    leave their cgroup a moment after the kill: the batch job's workers, after the job)."""
    for group in WEIGHT_GROUPS:
        rel = f"{root}/{group}"
        if not fs.exists(rel):
            continue
        end = time.monotonic() + timeout
        while fs.read(rel, "cgroup.procs").strip() and time.monotonic() < end:
            time.sleep(0.1)
        fs.rmdir(rel)
    fs.rmdir(root)


def nxrctl(*args: str) -> str:
    sock = str(RUN_DIR / "nxrd.sock")
    return subprocess.run(
        [str(BIN / "nxrctl"), "--socket", sock, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def cpu_seconds(proc: psutil.Process, children: bool) -> float:
    """The CPU time of a process, with its children's (the batch job's worker processes;
    not nxrd's, which are the workloads)."""
    t = proc.cpu_times()
    total = float(t.user + t.system)
    for child in proc.children(recursive=True) if children else []:
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def module(argv: list[str]) -> str:
    """The module a workload's command runs (`python3 -m MODULE ...`)."""
    if "-m" not in argv[:-1]:
        raise SystemExit(f"demo: {' '.join(argv)}: not `python3 -m MODULE ...`")
    return argv[argv.index("-m") + 1]


def find(module: str) -> psutil.Process | None:
    for p in psutil.process_iter(["cmdline"]):
        if module in (p.info["cmdline"] or []):
            return p
    return None


def line_count(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: the {what} did not start in {timeout:.0f}s")


def wall_offset() -> float:
    return time.time() - time.monotonic()


if __name__ == "__main__":
    main()
