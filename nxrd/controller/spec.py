"""The control law's view of a profile and its plan. Pure."""

from __future__ import annotations

from typing import Any

from nxrd.controller.law import Front, Lower, Spec, Target
from nxrd.front.render import defaults
from nxrd.model.classes import policy
from nxrd.model.plan import Plan
from nxrd.model.replicas import group_of, is_front
from nxrd.profile.model import ControllerSettings, Profile


def control_spec(profile: Profile, plan: Plan) -> Spec:
    """Targets: workloads of a protected class with an slo. Lowers: every other class.
    Fronts: those of the workloads whose replicas are targets."""
    c = profile.controller
    targets, lowers = [], []
    egress = {k.workload: k.ceil for k in plan.egress.classes} if plan.egress else {}
    for wl in plan.workloads:
        if is_front(wl.name):
            continue  # in the request path, on nxrd's CPUs: steered through its admission
        spec = profile.workloads[wl.name]
        cpus = tuple(sorted(wl.values.cpus))
        if policy(wl.workload_class).protected:
            if spec.slo is not None:
                name, seconds = spec.slo.target
                targets.append(Target(wl.name, seconds, name, cpus))
        else:
            lowers.append(
                Lower(
                    wl.name,
                    wl.workload_class,
                    cpus,
                    None if wl.values.idle else wl.values.weight,
                    min_cpu=spec.control.min_cpu,
                    may_freeze=spec.control.freeze,
                    may_stop=policy(wl.workload_class).stop_default
                    if spec.control.stop is None
                    else spec.control.stop,
                    cpu_max=spec.cpu_max,
                    egress=egress.get(wl.name),
                    priority=spec.priority,
                )
            )
    # a front's group and its targets' settings (every replica has its workload's serve)
    served = {group_of(t.name): profile.workloads[t.name] for t in targets}
    fronts = []
    for wl in plan.workloads:
        replica = served.get(group_of(wl.name))
        if wl.front_config is None or replica is None or replica.serve is None:
            continue
        fronts.append(Front(wl.name, defaults(replica.serve, replica)[0]))
    return tuned(
        c,
        targets,
        lowers,
        share=c.share,
        share_below=c.share_below,
        judge=c.judge,
        fronts=tuple(fronts),
    )


def tuned(c: ControllerSettings, targets: list[Target], lowers: list[Lower], **rest: Any) -> Spec:
    """The law's Spec over targets and lowers, with the profile's [controller] timings and
    bands (rest: what the caller decides itself: sharing, lending, judging, fronts)."""
    return Spec(
        tuple(targets),
        tuple(lowers),
        act_below=c.act_below,
        relax_above=c.relax_above,
        relax_after=c.relax_after,
        cooldown=c.cooldown,
        max_step=c.max_step,
        stale_after=c.stale_after,
        probe_after=c.probe_after or None,
        **rest,
    )
