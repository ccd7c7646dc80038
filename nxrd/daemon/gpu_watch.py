"""GPU watching: poll NVML once a second, quarantine GPUs that fail and move the workloads
placed on them by count, and hold each workload to its gpu_memory by its policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nxrd.errors import NxrError, PlanError
from nxrd.kernel.gpu_usage import GpuAccounting
from nxrd.supervisor.gpu_budget import Budget, Watch
from nxrd.supervisor.gpu_budget import judge as judge_budgets
from nxrd.supervisor.gpu_health import Health, Judge, from_usage, quarantined
from nxrd.supervisor.states import State

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon


class GpuWatch:
    def __init__(self, use: GpuAccounting) -> None:
        self.use = use
        self.health: dict[str, Health] = {}  # GPU UUID -> what its polls showed
        self.budgets: dict[str, Watch] = {}  # workload -> its gpu_memory watch
        self.judge = Judge()

    def quarantined(self) -> dict[str, str]:
        """GPU UUID -> why it is quarantined."""
        return quarantined(self.health)

    def poll(self, d: Daemon, now: float) -> None:
        """Through the guard: a wedged driver costs this pass 2 s once, then nothing until
        its call returns."""
        self.use.poll(d.workload_of_pid)
        self.check_health(d)
        self.check_budgets(d, now)

    def check_health(self, d: Daemon) -> None:
        """Quarantine GPUs that failed this poll; move count-placed workloads off them."""
        gpus = d.topology.gpus
        readings = from_usage(gpus, self.use.seen, self.use.error)
        self.health, verdicts = self.judge(self.health, readings)
        if not verdicts:
            return
        index = {g.uuid: g.index for g in gpus}
        for v in verdicts:
            d.events.record(
                d.host.time(),
                "nxrd",
                "healthy",
                "quarantined",
                f"GPU {index[v.uuid]} ({v.uuid}): {v.reason}",
            )
        bad = self.quarantined()
        try:
            plan = d.reconf.replan(d.profile, d.source)
            d.reconf.write(plan, "GPU quarantine")
        except NxrError as e:
            why = e.lines()[0] if isinstance(e, PlanError) else str(e)
            d.say(f"workloads left on quarantined GPUs: {why}")
            return
        moved = [
            w.name
            for w in plan.workloads
            if [g.uuid for g in w.gpus] != [g.uuid for g in d.plan.workload(w.name).gpus]
        ]
        # by index: a MIG instance's assignment carries its own UUID, not its GPU's
        out = {index[u] for u in bad}
        stay = [w.name for w in plan.workloads if any(g.index in out for g in w.gpus)]
        d.reconf.switch(d.profile, plan, d.source, "GPU quarantine")
        for names, what in (
            (moved, "moved to healthy GPUs"),
            (stay, "left on quarantined GPUs (the profile names them)"),
        ):
            if names:
                d.say(f"{what}: {', '.join(names)}")

    def check_budgets(self, d: Daemon, now: float) -> None:
        """gpu_memory against what each running workload holds: events, then its policy."""
        seen = self.use.seen
        if seen is None:
            return  # no figures (NVML not answering): nothing to hold against anyone
        budgets = {
            name: Budget(
                spec.gpu_memory,
                spec.gpu_memory_policy or "warn",
                spec.restart.max_restarts,
                spec.restart.window,
            )
            for name, spec in d.profile.workloads.items()
            if spec.gpu_memory is not None
        }
        running = {
            name: {gpu: use.memory for gpu, use in seen.workloads.get(name, {}).items()}
            for name, rec in d.sup.records.items()
            if rec.state in (State.STARTING, State.READY)
        }
        self.budgets, actions = judge_budgets(self.budgets, running, budgets, now)
        for a in actions:
            if a.kind == "restart":
                d.sup.restart(a.workload, now, cause=f"restarted: {a.cause}")
            elif a.kind == "stop":
                d.sup.stop(a.workload, now, cause=f"stopped: {a.cause}", hold=True)
            else:
                state = d.sup.records[a.workload].state.value
                d.events.record(d.host.time(), a.workload, state, state, a.cause)

    def release(self, d: Daemon, index: int, who: str) -> dict[str, Any]:
        """Lift a GPU's quarantine (an operator who fixed or checked it): GPUs are placed
        on again, and a GPU that still fails is quarantined again at its next poll."""
        gpu = next((g for g in d.topology.gpus if g.index == index), None)
        if gpu is None:
            known = ", ".join(str(g.index) for g in d.topology.gpus) or "none"
            raise NxrError(f"no GPU {index} on this host (GPUs: {known})")
        why = self.quarantined().get(gpu.uuid)
        if why is None:
            raise NxrError(f"GPU {index} is not quarantined")
        self.health[gpu.uuid] = Health()  # a fresh baseline: old misses and ECC counts gone
        d.events.record(
            d.host.time(), "nxrd", "quarantined", "healthy", f"GPU {index} ({gpu.uuid}): {who}"
        )
        return {"gpu": index, "uuid": gpu.uuid, "was": why}

    def docs(self) -> list[dict[str, Any]]:
        """Per GPU: its use outside the workloads, and why it is quarantined (None if not)."""
        bad = self.quarantined()
        return [{**g, "quarantined": bad.get(g["uuid"])} for g in self.use.host()]
