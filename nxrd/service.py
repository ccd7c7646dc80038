"""Running nxrd: check the host, own the subtree, apply the plan, adopt, supervise, stop.

The loop is single-threaded: signal handlers only record the signal; the loop wakes on
them, on shim pidfds (a workload ended) and on the supervisor's next timer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pwd
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxrd.api.handlers import Handlers, workload_status
from nxrd.api.protocol import DEFAULT_SOCKET
from nxrd.api.server import Access, ApiServer
from nxrd.controller.loop import Controller
from nxrd.controller.push import PushReceiver
from nxrd.errors import KernelError, NxrError, PlanError, ProfileError
from nxrd.explain import explain
from nxrd.files import write_atomically
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import LinuxCgroupFS, parse_keyed
from nxrd.kernel.counters import KeptOpen
from nxrd.kernel.discovery import discover
from nxrd.kernel.gpu_usage import GpuAccounting
from nxrd.kernel.launch import read_status
from nxrd.kernel.linux_runtime import LinuxRuntime
from nxrd.kernel.mps import MpsDaemons
from nxrd.kernel.requirements import check, subtree_path, usable
from nxrd.kernel.subtree import take_subtree
from nxrd.ledger import Ledger
from nxrd.observe import (
    PRESSURE_FILES,
    PSI_PERIOD,
    USAGE_FILES,
    CpuSample,
    cpu_rates,
    cpu_sample,
    pressure,
    pressure_signals,
    usage_signals,
)
from nxrd.plan import Plan, make_plan
from nxrd.plan.diff import Change, diff
from nxrd.profile.load import parse_profiles, read_profiles
from nxrd.profile.model import Profile
from nxrd.service_defaults import DEFAULT_STATE_DIR
from nxrd.supervisor.events import Event, EventLog
from nxrd.supervisor.gpu_budget import Budget, Watch
from nxrd.supervisor.gpu_budget import judge as judge_budgets
from nxrd.supervisor.gpu_health import Health, Judge, from_usage, quarantined
from nxrd.supervisor.states import State
from nxrd.supervisor.supervisor import Record, Supervisor

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from nxrd.metrics import MetricsServer

RUNNING = (State.STARTING.value, State.READY.value, State.STOPPING.value)


def notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness, status and liveness; no-op elsewhere."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon

    with contextlib.suppress(OSError):
        daemon.notify(message)


def journald() -> bool:
    return os.path.exists("/run/systemd/journal/socket")


def _print_event(e: Event) -> None:
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.time))
        + f".{int(e.time * 1000) % 1000:03d}"
    )
    print(f"{stamp} {e.workload}: {e.old} -> {e.new} ({e.cause})", file=sys.stderr, flush=True)


def _journal_event(e: Event) -> None:
    from systemd import journal

    with contextlib.suppress(OSError):
        journal.send(
            f"{e.workload}: {e.old} -> {e.new} ({e.cause})",
            NXR_WORKLOAD=e.workload,
            NXR_EVENT=e.new,
            NXR_CAUSE=e.cause,
            NXR_OLD_STATE=e.old,
        )


class Daemon:
    def __init__(
        self,
        profiles: list[str],
        state_dir: str = DEFAULT_STATE_DIR,
        cgroup_root: str | None = None,
        on_stop: str = "stop",
        socket_path: str = DEFAULT_SOCKET,
        api_group: str | None = "nxr",
        api_read: str = "group",
    ) -> None:
        self.socket_path = socket_path
        self.access = Access(api_group, api_read)
        self.state_dir = Path(state_dir)
        self.configured = profiles
        files = read_profiles(profiles)
        self.applied = self._applied(files)
        self.profile, self.source = parse_profiles(self.applied or files)
        self.topology = discover(subtree=cgroup_root)
        self.plan = self._plan(self.profile, self.source, {}, {})
        self.on_stop = on_stop
        reqs = check(self.topology.cgroup)
        if not usable(reqs):
            missing = "; ".join(f"{r.detail} ({r.fix})" for r in reqs if not r.ok)
            raise NxrError(f"refusing to start without isolation: {missing}")
        root = cgroup_root or subtree_path(self.topology.cgroup)
        assert root is not None
        self.root = Path(root)
        self.signals: list[int] = []

    def start(self) -> Supervisor:
        """Own the subtree, write the plan's tree, adopt what a previous nxrd left running."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The socket first: if it cannot be bound, no cgroup has been touched yet.
        self.api = ApiServer(self.socket_path, self.access, on_error=self._api_error)
        self.metrics: MetricsServer | None = None
        self.push: PushReceiver | None = None
        self.counters = KeptOpen()
        self.tick_cpu: dict[str, CpuSample] = {}  # the previous tick's, for throttling
        # workload -> (its pid, when read, its pressure signals): re-read every PSI_PERIOD
        self.tick_pressure: dict[str, tuple[int, float, dict[str, float]]] = {}
        # a workload's main process -> (the workload, a pidfd telling whether it still lives)
        self.main_pids: dict[int, tuple[str, int]] = {}
        self.ledger = Ledger(time.time)
        self.samples: dict[str, tuple[CpuSample, CpuSample | None]] = {}  # last, one before
        # No GPUs found (no driver, no pynvml): no NVML session, no GPU figures, no errors.
        self.gpu_use = GpuAccounting(self.topology.gpus) if self.topology.gpus else None
        self.gpu_health: dict[str, Health] = {}  # GPU UUID -> what its polls showed
        self.gpu_budgets: dict[str, Watch] = {}  # workload -> its gpu_memory watch
        self.judge = Judge()
        try:
            self.fs: LinuxCgroupFS = take_subtree(self.root)
            self.ledger.load(self._ledger_file())
            self.fs.on_write = self.ledger.record
            with self.ledger.because(f"profile {self.source}, at nxrd start"):
                apply_plan(self.plan, self.fs)  # all or nothing; live values for adopted too
            if self.profile.host.metrics:
                self.metrics = self._metrics_server(self.profile.host.metrics)
            self.push = self._latency_receiver() if _pushes(self.profile) else None
        except NxrError:
            self.api.close()
            raise
        to_journal = journald()
        self.runtime = LinuxRuntime(
            self.fs, self.state_dir, journal=to_journal, gpus=self.topology.gpus
        )
        self.events = EventLog()
        self.events.sinks.append(_journal_event if to_journal else _print_event)
        self.sup = Supervisor(self.profile, self.plan, self.runtime, self.events, time.time)
        if self.push is not None:
            self.runtime.latency_socket = self.push.path
        # Before any workload starts: MPS clients find their GPU's daemon from the first try.
        self.mps = MpsDaemons(self._say)
        try:
            self.mps.ensure(self.plan.mps)
        except NxrError:
            self.api.close()
            raise
        self.controller = self._controller(self.profile, self.plan)
        if self.applied:
            self._say(f"using the profile applied by nxrctl ({self.source})")
        for warning in self.plan.warnings:
            self._say(f"warning: {warning}")
        self._adopt(time.monotonic())
        self.ledger.cause = "planned value, written when the workload started"
        self.api.handlers = Handlers(
            self.sup,
            self.plan,
            self.topology,
            self.access.privileged,
            self,
            gpus=self.gpu_docs if self.gpu_use is not None else None,
        )
        return self.sup

    # -- changing the profile of a running nxrd ----------------------------------------

    def _applied_file(self) -> Path:
        return self.state_dir / "applied.json"

    def _applied(self, configured: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        """The profile last applied with `nxrctl apply`, while the configured files that
        were in force then are unchanged; once they change (or on reload) they win."""
        try:
            saved = json.loads(self._applied_file().read_text())
            if saved["configured"] == _digest(configured):
                return [(str(n), str(t)) for n, t in saved["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def reconfigure(
        self, files: list[tuple[str, str]] | None, dry_run: bool, who: str
    ) -> dict[str, object]:
        """Apply a changed profile (files None: re-read the configured ones, as a reload).

        All or nothing: an invalid profile, a plan that does not fit or a cgroup write the
        kernel refuses changes nothing. Returns the changes and how each one lands.
        """
        try:
            configured = read_profiles(self.configured)
        except ProfileError:
            if files is None:
                raise
            configured = []  # only recorded; the next start fails on it and says why
        profile, source = parse_profiles(files if files is not None else configured)
        plan = self._plan(profile, source, quarantined(self.gpu_health), self._gpus_held())
        changes = diff((self.profile, self.plan), (profile, plan))
        address = profile.host.metrics
        if address != self.profile.host.metrics:
            changes.append(
                Change("", "host.metrics", self.profile.host.metrics or "", address or "", "live")
            )
        if not dry_run:
            if files is None:
                notify("RELOADING=1")
            verb = "reload" if files is None else "nxrctl apply"
            metrics, push = self.metrics, self.push
            opened: list[MetricsServer | PushReceiver] = []
            try:
                # Sockets are bound before anything is written: a taken port changes nothing.
                if address != self.profile.host.metrics and address:
                    metrics = self._metrics_server(address)
                    opened.append(metrics)
                elif address is None:
                    metrics = None
                if push is None and _pushes(profile):
                    push = self._latency_receiver()
                    opened.append(push)
                self._write(plan, f"{verb} by {who} ({source})")
            except NxrError:
                for sock in opened:
                    sock.close()
                raise
            finally:
                if files is None:
                    notify("READY=1")
            if push is not self.push and push is not None:
                self.push, self.runtime.latency_socket = push, push.path
            if metrics is not self.metrics:
                if self.metrics is not None:
                    self.metrics.close()
                self.metrics = metrics
            self._switch(profile, plan, source, who)
            if files is None:
                self._applied_file().unlink(missing_ok=True)
            else:
                text = json.dumps({"configured": _digest(configured), "files": files, "by": who})
                write_atomically(self._applied_file(), text)
            self._say(f"{verb} by {who}: {len(changes)} changes")
        return {
            "source": source,
            "changes": [c.to_dict() for c in changes],
            "applied": not dry_run,
            "warnings": plan.warnings,
        }

    def _write(self, plan: Plan, why: str) -> None:
        """Write a new plan's cgroup values (all or nothing: NxrError changes nothing)."""
        # Static values first, so the new plan's are what stays written.
        self.controller.release(time.monotonic(), "profile changed")
        with self.ledger.because(why):
            apply_plan(plan, self.fs)

    def _switch(self, profile: Profile, plan: Plan, source: str, who: str) -> None:
        """Run the new plan, once its values are written: restart what it changed."""
        self.sup.reconfigure(profile, plan, time.monotonic(), who)
        self.controller.close()
        self.controller = self._controller(profile, plan)
        self.profile, self.plan, self.source = profile, plan, source
        self._ensure_mps()
        if self.api.handlers is not None:
            self.api.handlers.plan = plan

    def _plan(
        self,
        profile: Profile,
        source: str,
        avoid: Mapping[str, str],
        keep: Mapping[str, Sequence[str]],
    ) -> Plan:
        """The profile planned on this host, with the users' UIDs looked up here."""
        uids = {"": os.geteuid()}
        for wl in profile.workloads.values():
            if wl.user is not None:
                # not on this host (or no valid name): its start says so
                with contextlib.suppress(KeyError, ValueError):
                    uids[wl.user] = pwd.getpwnam(wl.user).pw_uid
        return make_plan(profile, self.topology, source, avoid, keep, uids)

    def _gpus_held(self) -> dict[str, list[str]]:
        """GPU UUIDs of each workload's plan now: planning again keeps them where it can."""
        return {w.name: [g.uuid for g in w.gpus] for w in self.plan.workloads}

    def _check_gpus(self) -> None:
        """Quarantine GPUs that failed this poll; move count-placed workloads off them."""
        assert self.gpu_use is not None
        readings = from_usage(self.topology.gpus, self.gpu_use.seen, self.gpu_use.error)
        self.gpu_health, verdicts = self.judge(self.gpu_health, readings)
        if not verdicts:
            return
        index = {g.uuid: g.index for g in self.topology.gpus}
        for v in verdicts:
            self.events.record(
                time.time(),
                "nxrd",
                "healthy",
                "quarantined",
                f"GPU {index[v.uuid]} ({v.uuid}): {v.reason}",
            )
        bad = quarantined(self.gpu_health)
        try:
            plan = self._plan(self.profile, self.source, bad, self._gpus_held())
            self._write(plan, "GPU quarantine")
        except NxrError as e:
            why = e.lines()[0] if isinstance(e, PlanError) else str(e)
            self._say(f"workloads left on quarantined GPUs: {why}")
            return
        moved = [
            w.name
            for w in plan.workloads
            if [g.uuid for g in w.gpus] != [g.uuid for g in self.plan.workload(w.name).gpus]
        ]
        # by index: a MIG instance's assignment carries its own UUID, not its GPU's
        out = {index[u] for u in bad}
        stay = [w.name for w in plan.workloads if any(g.index in out for g in w.gpus)]
        self._switch(self.profile, plan, self.source, "GPU quarantine")
        for names, what in (
            (moved, "moved to healthy GPUs"),
            (stay, "left on quarantined GPUs (the profile names them)"),
        ):
            if names:
                self._say(f"{what}: {', '.join(names)}")

    def _check_gpu_budgets(self, now: float) -> None:
        """gpu_memory against what each running workload holds: events, then its policy."""
        assert self.gpu_use is not None
        seen = self.gpu_use.seen
        if seen is None:
            return  # no figures (NVML not answering): nothing to hold against anyone
        budgets = {
            name: Budget(
                spec.gpu_memory,
                spec.gpu_memory_policy or "warn",
                spec.restart.max_restarts,
                spec.restart.window,
            )
            for name, spec in self.profile.workloads.items()
            if spec.gpu_memory is not None
        }
        running = {
            name: {gpu: use.memory for gpu, use in seen.workloads.get(name, {}).items()}
            for name, rec in self.sup.records.items()
            if rec.state in (State.STARTING, State.READY)
        }
        self.gpu_budgets, actions = judge_budgets(self.gpu_budgets, running, budgets, now)
        for a in actions:
            if a.kind == "restart":
                self.sup.restart(a.workload, now, cause=f"restarted: {a.cause}")
            elif a.kind == "stop":
                self.sup.stop(a.workload, now, cause=f"stopped: {a.cause}", hold=True)
            else:
                state = self.sup.records[a.workload].state.value
                self.events.record(time.time(), a.workload, state, state, a.cause)

    def _reload_on_signal(self) -> None:
        try:
            self.reconfigure(None, False, "SIGHUP")
        except NxrError as e:
            lines = e.lines() if isinstance(e, ProfileError) else [str(e)]
            self._say("reload failed: " + "; ".join(lines))

    def _api_error(self, message: str) -> None:
        print(f"nxrd: {message}", file=sys.stderr, flush=True)

    # -- what the API reads (the handlers' Daemon protocol) ----------------------------

    def stats(self, rec: Record) -> dict[str, object]:
        """Live figures of a workload's leaf, for status, top and metrics."""
        out: dict[str, object] = {}
        cg = rec.plan.cgroup
        with contextlib.suppress(KernelError, ValueError, IndexError):
            if self.fs.exists(cg):
                out["memory_current"] = int(self.fs.read(cg, "memory.current"))
                stat = self.fs.read_keyed(cg, "cpu.stat")
                out["cpu_usage_usec"] = int(stat["usage_usec"])
                out["cpu_throttled_usec"] = int(stat.get("throttled_usec", 0))
                events = self.fs.read_keyed(cg, "memory.events")
                out["memory_events"] = {k: int(v) for k, v in events.items()}
                for res in ("cpu", "memory", "io"):
                    p = pressure(self.fs.read(cg, f"{res}.pressure"))
                    out[f"{res}_pressure"] = {
                        "some_avg10": p.get("some_avg10", 0.0),
                        "full_avg10": p.get("full_avg10", 0.0),
                        "some_seconds_total": p.get("some_total_usec", 0.0) / 1e6,
                        "full_seconds_total": p.get("full_total_usec", 0.0) / 1e6,
                    }
        last, before = self.samples.get(rec.name, (None, None))
        if last is not None:
            out.update(cpu_rates(before, last))
        out["latency_seconds"] = self.controller.latency(rec.name, time.monotonic())
        if self.gpu_use is not None:
            planned = [g.index for g in rec.plan.gpus]
            out.update(self.gpu_use.workload(rec.name, planned, rec.pid is not None))
        return out

    def _latency_receiver(self) -> PushReceiver:
        path = str(Path(self.socket_path).parent / "latency.sock")
        return PushReceiver(path, self._workload_of_pid)

    def _controller(self, profile: Profile, plan: Plan) -> Controller:
        return Controller(profile, plan, self.fs, self.sup, self.events, self.ledger, time.time)

    def _workload_of_pid(self, pid: int) -> str | None:
        """The workload whose cgroup holds pid (or None): who may report its latency.
        A workload's main process, once found there, is known by its PID while it lives,
        as told by a pidfd taken before the lookup (the shim reaps it, and its PID may go
        to another process before nxrd hears of the exit): reading /proc for each report
        cost nxrd more than the rest of a report's handling."""
        held = self.main_pids.get(pid)
        if held is not None:
            known, pidfd = held
            rec = self.sup.records.get(known)
            if rec is not None and rec.pid == pid and not _exited(pidfd):
                return known
            self._forget_pid(pid)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None  # gone already
        name: str | None = None
        try:
            with open(f"/proc/{pid}/cgroup") as f:  # each report but the main's: no pathlib
                line = f.readline().rstrip("\n")
            # /proc paths are below the cgroup2 mount; nxrd's root is a filesystem path.
            mount = (self.topology.cgroup.mount or "/sys/fs/cgroup").rstrip("/")
            path, mine = mount + line.partition("::")[2], str(self.root)
            if path.startswith(mine + "/"):
                name = self._owner(path[len(mine) + 1 :])
        except OSError:
            pass
        if name is not None and self.sup.records[name].pid == pid:
            self.main_pids[pid] = (name, fd)
        else:
            os.close(fd)
        return name

    def _forget_pid(self, pid: int) -> None:
        _, fd = self.main_pids.pop(pid)
        os.close(fd)

    def _owner(self, rel: str) -> str | None:
        """The workload whose leaf is rel (a cgroup below nxrd's root) or holds it."""
        for rec in self.sup.records.values():
            if rel == rec.plan.cgroup or rel.startswith(rec.plan.cgroup + "/"):
                return rec.name
        return None

    def _metrics_server(self, address: str) -> MetricsServer:
        from nxrd.metrics import MetricsServer

        # The controller is replaced on apply: look it up at each scrape.
        return MetricsServer(
            address,
            self.status_docs,
            lambda: self.controller.summary(),
            self.gpu_docs,
        )

    def gpu_docs(self) -> list[dict[str, Any]]:
        """Per GPU: its use outside the workloads, and why it is quarantined (None if not)."""
        if self.gpu_use is None:
            return []
        bad = quarantined(self.gpu_health)
        return [{**g, "quarantined": bad.get(g["uuid"])} for g in self.gpu_use.host()]

    def status_docs(self) -> list[dict[str, object]]:
        """What status shows for every workload (also the metrics' source)."""
        return [workload_status(r, self.stats(r)) for r in list(self.sup.records.values())]

    def _say(self, message: str) -> None:
        """An event of nxrd itself (no workload state changes)."""
        self.events.record(time.time(), "nxrd", "-", "-", message)

    def _ensure_mps(self) -> None:
        try:
            self.mps.ensure(self.plan.mps)
        except NxrError as e:
            self._say(str(e))

    def _close(self, leave: bool = False) -> None:
        if not leave:  # left-running workloads keep their MPS server (adopted next start)
            self.mps.close()
        self.api.close()
        self.counters.close()
        for pid in list(self.main_pids):
            self._forget_pid(pid)
        self.controller.close()
        if self.push is not None:
            self.push.close()
        if self.metrics is not None:
            self.metrics.close()

    def _tick_signals(self, names: list[str]) -> dict[str, dict[str, float]]:
        """Usage, throttling, memory and pressure of running workloads, read every
        controller tick through kept-open files (pressure only when the kernel has new
        averages)."""
        out = {}
        now = time.monotonic()
        for name in names:
            rec = self.sup.records.get(name)
            if rec is None or rec.pid is None:
                self.tick_cpu.pop(name, None)
                self.tick_pressure.pop(name, None)
                continue
            leaf = self._leaf(rec)
            texts = {f: self.counters.read(f"{leaf}/{f}") for f in USAGE_FILES}
            out[name], cur = usage_signals(texts, self.tick_cpu.get(name), now)
            if cur is not None:
                self.tick_cpu[name] = cur
            held = self.tick_pressure.get(name)
            if held is None or held[0] != rec.pid or now - held[1] >= PSI_PERIOD:
                texts = {f: self.counters.read(f"{leaf}/{f}") for f in PRESSURE_FILES}
                held = self.tick_pressure[name] = (rec.pid, now, pressure_signals(texts))
            out[name].update(held[2])
        return out

    def _leaf(self, rec: Record) -> str:
        """The workload's leaf as a plain string: pathlib joins cost more than the reads."""
        return f"{self.root}/{rec.plan.cgroup}"

    def _sample(self, now: float) -> None:
        """CPU counters of every running workload, so status can show rates (a workload
        the controller watches was read by its tick, less than a second ago)."""
        for pid, (name, _) in list(self.main_pids.items()):
            rec = self.sup.records.get(name)
            if rec is None or rec.pid != pid:
                self._forget_pid(pid)
        for rec in list(self.sup.records.values()):
            leaf = self._leaf(rec)
            if rec.pid is None:
                self.samples.pop(rec.name, None)
                self.counters.forget_under(leaf)
                continue
            cur = self.tick_cpu.get(rec.name)
            if cur is None or now - cur.time >= 1.0:
                text = self.counters.read(f"{leaf}/cpu.stat")
                if text is None:
                    continue
                cur = cpu_sample(now, parse_keyed(text))
            last = self.samples.get(rec.name, (None, None))[0]
            if cur is not last:
                self.samples[rec.name] = (cur, last)

    def explain(self, rec: Record) -> dict[str, object]:
        cg = rec.plan.cgroup
        kernel: dict[str, str] = {}
        for filename in [*rec.plan.files, "cpuset.cpus.effective", "cpuset.mems.effective"]:
            with contextlib.suppress(KernelError):
                kernel[filename] = self.fs.read(cg, filename)
        spec = rec.spec.model_dump(mode="json", by_alias=True)
        return {"resources": explain(spec, rec.plan.files, self.ledger.of(cg), kernel)}

    def log_file(self, name: str) -> Path:
        return self.runtime.log_file(name)

    def _ledger_file(self) -> Path:
        return self.state_dir / "ledger.json"

    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _adopt(self, now: float) -> None:
        try:
            saved = json.loads(self._state_file().read_text()).get("workloads", {})
        except (OSError, ValueError, AttributeError):
            saved = {}
        for name, entry in saved.items():
            if not isinstance(entry, dict):
                continue
            if name in self.sup.records and entry.get("state") not in RUNNING:
                if entry.get("launch") != self.sup.launch_key(name):
                    continue  # launched differently now: a fixed profile gets a fresh start
                self.sup.restore(
                    name,
                    str(entry.get("state")),
                    str(entry.get("reason", "")),
                    entry.get("stop_cause") if isinstance(entry.get("stop_cause"), str) else None,
                    entry.get("held") is True,
                )
                continue
            if entry.get("state") not in RUNNING:
                continue
            rec = self.sup.records.get(name)
            if rec is None or entry.get("cgroup") != rec.plan.cgroup:
                # Gone from the profile, or moved to another class: its old leaf must go.
                self._remove_leftover(name, entry)
                continue
            pid, shim = entry.get("pid"), entry.get("shim_pid")
            status = read_status(self.runtime.status_file(name)) or {}
            # Trust state.json only as far as the kernel and the shim's record confirm it
            # (after a reboot its PIDs may belong to unrelated processes).
            if (
                not isinstance(pid, int)
                or status.get("pid") != pid
                or status.get("shim_pid") != shim
                or pid not in self.fs.procs(rec.plan.cgroup)
            ):
                if self.runtime.populated(rec.plan):
                    self.runtime.kill_all(rec.plan)
                continue
            assert isinstance(shim, int)
            self.runtime.watch(shim)
            self.sup.adopt(name, pid, shim, entry.get("started_at") or now, now, entry["state"])
            launched_with = entry.get("launch")
            if launched_with is not None and launched_with != self.sup.launch_key(name):
                # Its cgroup values were updated live by apply_plan; command or env need a restart.
                self.sup.restart(name, now, cause="profile-changed")

    def _remove_leftover(self, name: str, entry: dict[str, object]) -> None:
        """A workload the profile no longer declares: kill it and remove its cgroup."""
        cgroup = str(entry.get("cgroup") or "")
        if cgroup and self.fs.exists(cgroup):
            self.fs.write(cgroup, "cgroup.kill", "1")
            with contextlib.suppress(KernelError):
                self.fs.rmdir_when_empty(cgroup, wait=2.0)
        self.events.record(time.time(), name, "ready", "stopped", "no longer in the profile")

    def _summary(self) -> str:
        """One line for `systemctl status`: how many workloads are in each state."""
        counts: dict[str, int] = {}
        for rec in self.sup.records.values():
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return f"{len(self.sup.records)} workloads: " + ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items())
        )

    def _save(self, last: str) -> str:
        self.ledger.save(self._ledger_file())
        text = json.dumps({"workloads": self.sup.snapshot()}, sort_keys=True)
        if text != last:
            write_atomically(self._state_file(), text)
        return text

    def loop(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: self.signals.append(s))
        stopping = False
        last = ""
        watchdog = int(os.environ.get("WATCHDOG_USEC", "0") or 0) / 2e6  # ping at half the limit
        last_ping = last_sample = 0.0
        status = ""
        notify("READY=1")
        while True:
            now = time.monotonic()
            if watchdog and now - last_ping >= watchdog:
                notify("WATCHDOG=1")
                last_ping = now
            # Swap, not iterate-then-clear: a signal landing in between is not lost.
            pending, self.signals = self.signals, []
            for got in pending:
                if got == signal.SIGHUP:
                    self._reload_on_signal()
                elif not stopping:
                    stopping = True
                    notify("STOPPING=1")
                    # Workloads left running keep no cap or freeze nobody will lift.
                    self.controller.release(now, "nxrd exiting")
                    if self.on_stop == "leave":
                        self._save(last)
                        self._close(leave=True)
                        return 0
                    self.sup.stop_all(now)
            self.sup.tick(now)
            if not stopping:
                self.controller.tick(now, self._tick_signals)
            summary = self._summary()  # after the tick: what systemctl shows is current
            if summary != status:
                notify(f"STATUS={summary}")
                status = summary
            if now - last_sample >= 1.0:
                self._sample(now)
                self._ensure_mps()  # one that exited is started again
                if self.gpu_use is not None:
                    # Through the guard: a wedged driver costs this pass 2 s once, then
                    # nothing until its call returns.
                    self.gpu_use.poll(self._workload_of_pid)
                    self._check_gpus()
                    self._check_gpu_budgets(now)
                last_sample = now
            last = self._save(last)
            if stopping and self.sup.all_stopped():
                self._close()
                return 0
            # A fresh poll set each pass: a closed pidfd whose number was reused would
            # otherwise stay silently unwatched.
            poller = select.poll()
            poller.register(wake_r, select.POLLIN)
            poller.register(self.api.fileno(), select.POLLIN)
            if self.metrics is not None:
                poller.register(self.metrics.fileno(), select.POLLIN)
            if self.push is not None:
                poller.register(self.push.fileno(), select.POLLIN)
            for fd in self.runtime.pidfds.values():
                poller.register(fd, select.POLLIN)
            wait = min(self.sup.next_wakeup(now), self.controller.wakeup(now), 1.0)
            self._wait(poller, now + wait, wake_r)

    def _wait(self, poller: select.poll, until: float, wake_r: int) -> None:
        """Serve what arrives until `until` or until something other than a latency
        report does. Reports come with every request a workload serves (tens a second):
        they only add samples, so they do not run the rest of the loop each time."""
        push = self.push
        push_fd = push.fileno() if push is not None else None
        while True:
            # rounded up: a poll that ends a fraction of a millisecond early is a wasted pass
            timeout_ms = max(0, math.ceil((until - time.monotonic()) * 1000))
            ready = poller.poll(timeout_ms)
            for fd, _ in ready:
                if fd == self.api.fileno():
                    self.api.serve_ready()
                elif self.metrics is not None and fd == self.metrics.fileno():
                    self.metrics.serve_ready()
                elif push is not None and fd == push_fd:
                    for name, seconds in push.drain():
                        self.controller.push(name, seconds, time.monotonic())
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
            if not ready or any(fd != push_fd for fd, _ in ready) or time.monotonic() >= until:
                return


def _digest(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def _pushes(profile: Profile) -> bool:
    """Whether some workload pushes its latencies (nxrd then listens for them)."""
    return any(w.slo is not None and w.slo.source.push for w in profile.workloads.values())


def _exited(pidfd: int) -> bool:
    """Whether the process behind a pidfd has exited (its pidfd turns readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
