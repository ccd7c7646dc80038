"""The control law's view of a profile and its plan. Pure."""

from __future__ import annotations

from nxrd.controller.law import Front, Lower, Spec, Target
from nxrd.front.render import defaults
from nxrd.model.classes import policy
from nxrd.model.plan import Plan
from nxrd.model.replicas import group_of, is_front
from nxrd.profile.model import Profile


def control_spec(profile: Profile, plan: Plan) -> Spec:
    """Targets: workloads of a protected class with an slo. Lowers: every other class.
    Fronts: those of the workloads whose replicas are targets."""
    c = profile.controller
    targets, lowers = [], []
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
                    may_stop=spec.control.stop,
                    cpu_max=spec.cpu_max,
                )
            )
    served = {group_of(t.name) for t in targets}
    fronts = []
    for wl in plan.workloads:
        group = group_of(wl.name)
        if wl.front_config is None or group not in served:
            continue
        replicas = tuple(
            w.name for w in plan.workloads if group_of(w.name) == group and w.name != wl.name
        )
        serve = profile.workloads[replicas[0]].serve
        assert serve is not None
        inflight, _ = defaults(serve, profile.workloads[replicas[0]])
        fronts.append(Front(wl.name, group, replicas, inflight))
    return Spec(
        tuple(targets),
        tuple(lowers),
        act_below=c.act_below,
        relax_above=c.relax_above,
        relax_after=c.relax_after,
        cooldown=c.cooldown,
        max_step=c.max_step,
        stale_after=c.stale_after,
        share=c.share,
        share_below=c.share_below,
        probe_after=c.probe_after or None,
        judge=c.judge,
        fronts=tuple(fronts),
    )
