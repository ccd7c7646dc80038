"""The planner: profile + host topology -> plan. Pure: no file, process or clock access."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nxrd.errors import PlanError, Problem
from nxrd.front.render import Server, render
from nxrd.model.classes import CLASSES
from nxrd.model.plan import CgroupPlan, GpuAssignment, Plan, WorkloadPlan, mps_dirs
from nxrd.model.replicas import group_of, index_of, is_front
from nxrd.model.topology import Gpu, Topology, gpu_units
from nxrd.model.units import format_cpu_list, format_size
from nxrd.model.values import DEFAULT_WEIGHT, LeafValues, ParentValues, cpu_quota
from nxrd.plan.shape import plan_egress
from nxrd.plan.threads import THREAD_VARS
from nxrd.profile.model import Profile, Workload


@dataclass
class _Allocation:
    """Bookkeeping while allocating; discarded once the plan is built."""

    topo: Topology
    reserved: frozenset[int]
    # online CPU -> its node, for CPUs nxrd's cgroup may not run on (a parent's cpuset)
    beyond: Mapping[int, int] = field(default_factory=dict)
    # CPU in reach -> its core's siblings beyond it: what runs outside nxrd may run there
    split: Mapping[int, frozenset[int]] = field(default_factory=dict)
    avoid: Mapping[str, str] = field(default_factory=dict)  # GPU UUID -> why
    keep: Mapping[str, Sequence[str]] = field(default_factory=dict)  # workload -> GPU UUIDs
    mps: bool = False  # [host] mps: shared GPUs run under an MPS control daemon
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    core_owner: dict[tuple[int, ...], str] = field(default_factory=dict)
    cpus: dict[str, frozenset[int]] = field(default_factory=dict)
    gpus: dict[str, list[GpuAssignment]] = field(default_factory=dict)
    gpu_users: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)  # by UUID
    notes: dict[str, list[str]] = field(default_factory=dict)
    replicas_refused: dict[str, int] = field(default_factory=dict)  # key -> further replicas

    def problem(self, name: str, key: str, message: str) -> None:
        """One problem at the key the profile declares: for replicas, their workload's key,
        said once, with how many more replicas it stopped."""
        group = group_of(name)
        where = f"workloads.{group}.{key}"
        if group != name:
            if where in self.replicas_refused:
                self.replicas_refused[where] += 1
                return
            self.replicas_refused[where] = 0
            if name not in message:
                message = f"{name}: {message}"
        self.problems.append(Problem(where, message))

    def refusals(self) -> list[Problem]:
        out = []
        for p in self.problems:
            more = self.replicas_refused.get(p.field, 0)
            also = f"; {more} more {'replica' if more == 1 else 'replicas'} too" if more else ""
            out.append(Problem(p.field, p.message + also))
        return out

    def note(self, name: str, message: str) -> None:
        self.notes.setdefault(name, []).append(message)


def make_plan(
    profile: Profile,
    topo: Topology,
    source: str | None = None,
    avoid: Mapping[str, str] | None = None,
    keep: Mapping[str, Sequence[str]] | None = None,
    uids: Mapping[str, int] | None = None,
) -> Plan:
    """Allocate cores, memory and GPUs; raises PlanError listing everything that does not fit.

    avoid: GPUs (UUID -> why) that get no new placements, such as quarantined ones; a
    workload that names one explicitly keeps it, with a warning.
    keep: the GPUs (UUIDs) each workload holds now. One placed by count keeps them while
    they are as many as it asks for and it could be given them anew (healthy, free or
    shareable, large enough), so that planning again moves, and restarts, only the
    workloads that must move.
    uids: user name -> UID on this host, "" for nxrd's own user, so that a rule about
    users compares users rather than spellings ("root" and nxrd running as root); a name
    missing from it is compared as written.
    """
    host_cpus, split = {c.id: c.node for c in topo.cpus}, topo.split_by_reach()
    topo, limits = topo.within_reach()
    online = frozenset(c.id for c in topo.cpus)
    beyond = {c: n for c, n in host_cpus.items() if c not in online}
    st = _Allocation(topo, _reserved_cpus(profile, topo, online), beyond)
    st.avoid, st.keep, st.mps = dict(avoid or {}), dict(keep or {}), profile.host.mps
    st.split = {c: out for c, out in split.items() if c not in st.reserved}
    if st.split:
        outside = format_cpu_list(frozenset().union(*st.split.values()))
        st.warnings.append(
            f"CPUs {format_cpu_list(frozenset(st.split))} share cores with CPUs beyond nxrd's "
            f"reach ({outside}): no exclusive workload gets them, only shared ones"
        )
    wanted = profile.host.reserved_cpus or frozenset()
    out_of_reach = wanted & frozenset(beyond)
    if wanted - online - out_of_reach:
        st.problems.append(Problem("host.reserved_cpus", _not_here(st, wanted, online)))
    elif out_of_reach:
        # kept from the system already: no workload can be placed there
        instead = (
            ""
            if wanted & online
            else "; within reach nxrd reserves "
            + (f"{format_cpu_list(st.reserved)}, as by default" if st.reserved else "none")
        )
        st.warnings.append(
            f"host.reserved_cpus: CPUs {format_cpu_list(out_of_reach)} are "
            f"beyond the CPUs nxrd's cgroup may run on, so no workload runs there anyway{instead}"
        )
    order = sorted(
        profile.workloads.items(),
        # replicas in index order (chat.2 before chat.10)
        key=lambda kv: (
            CLASSES[kv[1].workload_class].rank,
            -kv[1].priority,
            group_of(kv[0]),
            index_of(kv[0]) or 0,
        ),
    )
    _assign_gpus(st, order)
    mps = _mps_gpus(st, profile, uids or {})
    _assign_exclusive(st, order, online)
    shared = online - st.reserved - frozenset(c for core in st.core_owner for c in core)
    _assign_shared(st, order, online, shared)
    guaranteed = _check_memory(st, profile, topo)
    _check_gpu_memory(st, profile)
    egress = plan_egress(profile, topo, st.problems)
    if st.problems:
        raise PlanError(source, st.refusals())

    workloads = [
        _workload_plan(st, name, wl, topo, profile) for name, wl in profile.workloads.items()
    ]
    return Plan(
        hostname=topo.hostname,
        online_cpus=format_cpu_list(online),
        reserved_cpus=format_cpu_list(st.reserved),
        shared_cpus=format_cpu_list(shared),
        memory=topo.memory,
        reserved_memory=profile.host.reserved_memory,
        guaranteed_memory=guaranteed,
        root=_parent_plan("", workloads),
        classes=[
            _parent_plan(cls, [w for w in workloads if w.workload_class == cls])
            for cls in CLASSES
            if any(w.workload_class == cls for w in workloads)
        ],
        workloads=workloads,
        warnings=limits + st.warnings,
        mps=mps,
        egress=egress,
    )


def _reserved_cpus(profile: Profile, topo: Topology, online: frozenset[int]) -> frozenset[int]:
    # reserved CPUs all out of reach reserve nothing nxrd could use: the default applies
    # within reach, so that nxrd itself still keeps off exclusive cores
    if profile.host.reserved_cpus is not None and profile.host.reserved_cpus & online:
        return profile.host.reserved_cpus & online
    if len(online) < 4:
        return frozenset()
    # The whole core of the lowest CPU, so the system shares no core with an exclusive workload.
    first = min(online)
    return next(frozenset(core) for core in topo.cores() if first in core)


def _assign_gpus(st: _Allocation, order: list[tuple[str, Workload]]) -> None:
    """GPUs, and MIG instances, for every workload that asks for some.

    A MIG-enabled GPU is given only as its instances, named by their UUIDs: given whole,
    CUDA would use one of its instances and no other workload could have the rest.
    """
    by_index = {g.index: g for g in st.topo.gpus}
    # UUID -> (its GPU, the MIG instance it names or None)
    by_uuid = gpu_units(st.topo.gpus)
    wants = {name: wl.gpu_memory or 0 for name, wl in order}
    have = _gpu_summary(st.topo)

    def take(name: str, wl: Workload, gpu: Gpu, uuid: str) -> None:
        st.gpus.setdefault(name, []).append(
            GpuAssignment(index=gpu.index, uuid=uuid, node=gpu.node, shared=wl.gpu_shared)
        )
        st.gpu_users.setdefault(uuid, []).append((name, wl.gpu_shared))

    def shareable(gpu: Gpu, uuid: str) -> bool:
        """Another gpu_shared workload may join those given this GPU (or instance)."""
        users = st.gpu_users.get(uuid, [])
        return all(s for _, s in users) and (st.mps or gpu.compute_mode == "default")

    def room(wl: Workload, gpu: Gpu) -> bool:
        """Its gpu_memory fits beside what the GPU's users ask (memory 0 = unknown: yes)."""
        asked = sum(wants[n] for n, _ in st.gpu_users.get(gpu.uuid, []))
        return not gpu.memory or gpu.memory >= asked + (wl.gpu_memory or 0)

    # Explicit GPUs first, so counts take what is left.
    for name, wl in order:
        if not isinstance(wl.gpus, tuple):
            continue
        mine: dict[str, int | str] = {}
        for ref in wl.gpus:
            gpu, mig = by_uuid.get(ref, (None, None)) if isinstance(ref, str) else (None, None)
            gpu = by_index.get(ref) if isinstance(ref, int) else gpu
            if gpu is None:
                st.problem(name, "gpus", f"GPU {ref} does not exist ({have})")
                continue
            what = f"GPU {gpu.index}" if mig is None else f"MIG instance {ref} of GPU {gpu.index}"
            uuid = gpu.uuid if mig is None else mig.uuid
            if uuid in mine:  # the same GPU by index and by UUID
                st.problem(name, "gpus", f"lists {what} twice (as {mine[uuid]} and {ref})")
                continue
            mine[uuid] = ref
            if mig is None and gpu.mig:
                st.problem(
                    name,
                    "gpus",
                    f"GPU {gpu.index} has MIG enabled: name one of its MIG instances by UUID "
                    f"({', '.join(m.uuid for m in gpu.mig_instances) or 'it has none now'})",
                )
                continue
            if gpu.compute_mode == "prohibited":
                st.problem(
                    name,
                    "gpus",
                    f"GPU {gpu.index}'s compute mode is prohibited: no CUDA process may use it "
                    f"(nvidia-smi -i {gpu.index} -c DEFAULT allows it)",
                )
                continue
            if gpu.uuid in st.avoid:
                st.warnings.append(
                    f"workloads.{name}.gpus: GPU {gpu.index} is quarantined "
                    f"({st.avoid[gpu.uuid]}); it stays there because the profile names it"
                )
            users = st.gpu_users.get(uuid, [])
            if users and not (wl.gpu_shared and all(s for _, s in users)):
                st.problem(
                    name,
                    "gpus",
                    f"{what} is already given to {users[0][0]!r} "
                    "(set gpu_shared = true on both to share it)",
                )
                continue
            if users and not shareable(gpu, uuid):
                st.problem(
                    name,
                    "gpus",
                    f"GPU {gpu.index} is in {gpu.compute_mode} compute mode, one CUDA process "
                    f"at a time, so {users[0][0]!r} and {name!r} cannot share it: share it "
                    f"under MPS ([host] mps = true) or allow several processes (nvidia-smi "
                    f"-i {gpu.index} -c DEFAULT)",
                )
                continue
            take(name, wl, gpu, uuid)
        if sum(1 for u in mine if by_uuid[u][1] is not None) > 1:
            st.problem(
                name,
                "gpus",
                "lists several MIG instances: a CUDA process uses only the first it is given, "
                "so give each instance its own workload",
            )

    def usable(gpu: Gpu) -> bool:
        """A whole GPU a count may take: healthy, not split by MIG, open to CUDA."""
        return gpu.uuid not in st.avoid and not gpu.mig and gpu.compute_mode != "prohibited"

    def fits(wl: Workload, gpu: Gpu) -> bool:
        return (
            usable(gpu)
            and (gpu.uuid not in st.gpu_users or (wl.gpu_shared and shareable(gpu, gpu.uuid)))
            and room(wl, gpu)
        )

    counted = [(n, wl) for n, wl in order if isinstance(wl.gpus, int) and wl.gpus > 0]
    # Then the workloads keeping the GPUs they hold, so that no other takes those first.
    for name, wl in counted:
        held = [by_uuid[u][0] for u in st.keep.get(name, ()) if u in by_uuid]
        if len(held) == wl.gpus and all(fits(wl, g) for g in held):
            for gpu in held:
                take(name, wl, gpu, gpu.uuid)

    for name, wl in counted:
        if name in st.gpus:
            continue  # kept
        assert isinstance(wl.gpus, int)
        usable_gpus = [g for g in st.topo.gpus if usable(g)]
        free = [g for g in usable_gpus if g.uuid not in st.gpu_users]
        if wl.gpu_shared and len(free) < wl.gpus:
            free += [g for g in usable_gpus if g.uuid in st.gpu_users and shareable(g, g.uuid)]
        if len(free) < wl.gpus:
            if not st.topo.gpus:
                st.problem(name, "gpus", f"needs {wl.gpus} GPU(s); {have}")
            else:
                st.problem(
                    name,
                    "gpus",
                    f"needs {wl.gpus} GPU(s); {len(free)} free of {len(st.topo.gpus)}"
                    + _why_not_free(st, wl.gpu_shared),
                )
            continue
        roomy = [g for g in free if room(wl, g)]
        if len(roomy) < wl.gpus:
            st.problem(
                name,
                "gpus",
                f"needs {wl.gpus} GPU(s) with {format_size(wl.gpu_memory or 0)} (gpu_memory); "
                f"{len(roomy)} of the {len(free)} free GPUs have that much left",
            )
            continue
        for gpu in _pick_gpus(roomy, wl.gpus):
            take(name, wl, gpu, gpu.uuid)


def _why_not_free(st: _Allocation, shared: bool) -> str:
    """Why the GPUs a count could not take are out of its reach, by reason."""
    why = [
        f"GPUs {format_cpu_list(ids)} are {what}"
        for what, out in (
            ("taken", lambda g: g.uuid in st.gpu_users),
            (
                "in an exclusive compute mode (shared only under MPS)",
                lambda g: (
                    shared
                    and not st.mps
                    and g.uuid in st.gpu_users
                    and g.compute_mode not in ("default", "prohibited")
                ),
            ),
            ("quarantined", lambda g: g.uuid in st.avoid),
            ("split by MIG (name an instance by UUID)", lambda g: g.mig),
            ("in prohibited compute mode", lambda g: g.compute_mode == "prohibited"),
        )
        if (ids := [g.index for g in st.topo.gpus if out(g)])
    ]
    return f" ({'; '.join(why)})" if why else ""


def _mps_gpus(st: _Allocation, profile: Profile, uids: Mapping[str, int]) -> list[str]:
    """GPUs shared under MPS. A client reaches one control daemon, so one GPU each."""
    if not st.mps:
        return []
    out: dict[str, list[str]] = {}  # GPU UUID -> its clients
    for name, gpus in st.gpus.items():
        shared = [g for g in gpus if g.shared]
        if len(shared) > 1:
            st.problem(
                name,
                "gpus",
                f"under MPS a gpu_shared workload takes one GPU (got {len(shared)}): each "
                "GPU has its own MPS control daemon",
            )
        for g in shared:
            out.setdefault(g.uuid, []).append(name)

    def user(name: str) -> tuple[str, int | str]:
        """How its user is named, and who that is."""
        given = profile.workloads[name].user
        return given or "nxrd's user", uids.get(given or "", given or "")

    # An MPS control daemon runs one user's server at a time; another user's clients wait
    # until that server exits, which a serving workload never does.
    for first, *rest in out.values():
        named, who = user(first)
        for name in rest:
            if user(name)[1] != who:
                st.problem(
                    name,
                    "user",
                    f"runs as {user(name)[0]}, but {first!r} on the same MPS GPU runs as "
                    f"{named}: an MPS server serves one user at a time, so one of them would "
                    "wait for the other to exit; run them as one user",
                )
    return sorted(out)


def _gpu_summary(topo: Topology) -> str:
    if not topo.gpus:
        return "no GPUs on this host" + (f": {topo.gpu_note}" if topo.gpu_note else "")
    return "host GPUs: " + ", ".join(f"{g.index} ({g.uuid})" for g in topo.gpus)


def _pick_gpus(free: list[Gpu], count: int) -> list[Gpu]:
    """Prefer GPUs on one NUMA node, so the workload's cores can be local to all of them."""
    by_node: dict[int | None, list[Gpu]] = {}
    for g in free:
        by_node.setdefault(g.node, []).append(g)
    fitting = [gs for gs in by_node.values() if len(gs) >= count]
    pool = min(fitting, key=lambda gs: (len(gs), gs[0].index)) if fitting else free
    return sorted(pool, key=lambda g: g.index)[:count]


def _assign_exclusive(
    st: _Allocation, order: list[tuple[str, Workload]], online: frozenset[int]
) -> None:
    cores = st.topo.cores()
    core_of = {cpu: core for core in cores for cpu in core}
    # Explicit cpusets first: they are fixed, the counted ones fit around them.
    for name, wl in order:
        if not wl.is_exclusive or wl.cpuset is None:
            continue
        if not _cpus_exist(st, name, wl.cpuset, online):
            continue
        if wl.cpuset & st.reserved:
            st.problem(
                name,
                "cpuset",
                f"CPUs {format_cpu_list(wl.cpuset & st.reserved)} are reserved for the system "
                f"(host.reserved_cpus defaults to {format_cpu_list(st.reserved)} on this host)",
            )
            continue
        owned = {core_of[c] for c in wl.cpuset}
        # An exclusive workload owns its cores whole, so no sibling may be reserved either.
        siblings_reserved = {c for core in owned for c in core} & st.reserved
        if siblings_reserved:
            st.problem(
                name,
                "cpuset",
                f"shares a core with reserved CPUs {format_cpu_list(siblings_reserved)}; "
                "exclusive workloads own whole cores",
            )
            continue
        split = frozenset().union(*(st.split.get(c, frozenset()) for core in owned for c in core))
        if split:
            st.problem(
                name,
                "cpuset",
                f"shares a core with CPUs {format_cpu_list(split)}, beyond the CPUs nxrd's "
                "cgroup may run on; exclusive workloads own whole cores",
            )
            continue
        clash = {st.core_owner[c] for c in owned if c in st.core_owner}
        if clash:
            st.problem(
                name, "cpuset", f"shares a core with exclusive workload {sorted(clash)[0]!r}"
            )
            continue
        for core in owned:
            st.core_owner[core] = name
        st.cpus[name] = wl.cpuset
        idle = frozenset(c for core in owned for c in core) - wl.cpuset
        if idle:
            st.note(
                name, f"SMT siblings {format_cpu_list(idle)} left idle (whole cores are exclusive)"
            )

    # Workloads tied to GPUs choose first, while their GPUs' nodes still have free cores.
    counted = [(n, w) for n, w in order if w.is_exclusive and w.cpus is not None]
    counted.sort(key=lambda kv: not st.gpus.get(kv[0]))
    for name, wl in counted:
        want = wl.cpus or 0
        free = [
            c
            for c in cores
            if c not in st.core_owner and not set(c) & st.reserved and c[0] not in st.split
        ]
        local_nodes = {g.node for g in st.gpus.get(name, []) if g.node is not None}
        chosen = _pick_cores(st.topo, free, want, local_nodes)
        if chosen is None:
            st.problem(name, "cpus", _no_cores_message(st, name, want, cores, free))
            continue
        for core in chosen:
            st.core_owner[core] = name
        got = frozenset(c for core in chosen for c in core)
        st.cpus[name] = got
        if len(got) > want:
            st.note(name, f"{want} CPUs rounded up to {len(chosen)} whole cores ({len(got)} CPUs)")
        if local_nodes:
            nodes = {st.topo.node_of(c) for c in got}
            if not nodes <= local_nodes:
                # a parent's cpuset can leave a GPU's node with few or no whole cores
                # nxrd may use (threads out of reach, or cores split by it)
                reach = any(n in local_nodes for n in st.beyond.values())
                st.note(
                    name,
                    "not all cores are NUMA-local to its GPUs (not enough free cores on node "
                    f"{format_cpu_list(sorted(local_nodes))}"
                    + (" with every thread within nxrd's reach)" if reach else ")"),
                )


def _no_cores_message(
    st: _Allocation, name: str, want: int, cores: list[tuple[int, ...]], free: list[tuple[int, ...]]
) -> str:
    """'chat needs 4 exclusive cores; 2 are free after reserving 0-1 (2 short)'."""
    widths = {len(c) for c in cores}
    # Count in cores only when every core has the same number of threads (not on hybrid CPUs).
    if len(widths) == 1 and widths != {1}:
        need, have, unit = math.ceil(want / widths.pop()), len(free), "exclusive cores"
    else:
        need, have = want, sum(len(c) for c in free)
        unit = "exclusive CPUs" + (" in whole cores" if len(widths) > 1 else "")
    context = [f"reserving {format_cpu_list(st.reserved)}"] if st.reserved else []
    if st.split:
        split = format_cpu_list(frozenset(st.split))
        context.append(f"leaving out CPUs {split} (cores split by the reach)")
    owners = Counter(group_of(n) for n in set(st.core_owner.values()))
    if owners:
        others = [
            g if g in st.cpus else f"{g} ({n} {'replica' if n == 1 else 'replicas'})"
            for g, n in owners.items()
        ]
        context.append("giving cores to " + ", ".join(sorted(others)))
    after = f" after {' and '.join(context)}" if context else ""
    verb = "is" if have == 1 else "are"
    return f"{name} needs {need} {unit}; {have} {verb} free{after} ({need - have} short)"


def _pick_cores(
    topo: Topology, free: list[tuple[int, ...]], cpus: int, local_nodes: set[int]
) -> list[tuple[int, ...]] | None:
    """Whole cores giving at least ``cpus`` CPUs: GPU-local first, else one node if it fits."""
    if sum(len(c) for c in free) < cpus:
        return None
    node_of = {c.id: c.node for c in topo.cpus}

    def fits(cores: list[tuple[int, ...]]) -> list[tuple[int, ...]] | None:
        out, got = [], 0
        for core in cores:
            if got >= cpus:
                break
            out.append(core)
            got += len(core)
        return out if got >= cpus else None

    if local_nodes:
        local = [c for c in free if node_of[c[0]] in local_nodes]
        rest = [c for c in free if node_of[c[0]] not in local_nodes]
        return fits(local) or fits(local + rest)
    by_node: dict[int, list[tuple[int, ...]]] = {}
    for core in free:
        by_node.setdefault(node_of[core[0]], []).append(core)
    # Stay on one NUMA node when possible; pick the node that leaves the fewest cores stranded.
    options = [(len(cs), n, fits(cs)) for n, cs in sorted(by_node.items())]
    single = [(size, n, pick) for size, n, pick in options if pick is not None]
    if single:
        return min(single, key=lambda o: (o[0], o[1]))[2]
    return fits(free)


def _cpus_exist(st: _Allocation, name: str, cpus: frozenset[int], online: frozenset[int]) -> bool:
    if cpus <= online:
        return True
    st.problem(name, "cpuset", _not_here(st, cpus, online))
    return False


def _not_here(st: _Allocation, cpus: frozenset[int], online: frozenset[int]) -> str:
    """Why named CPUs cannot be planned on: not on this host, or out of nxrd's reach (a
    parent's cpuset, which the kernel would quietly apply instead)."""
    out = cpus & frozenset(st.beyond)
    gone = cpus - online - out
    said = [f"CPUs {format_cpu_list(gone)} are not online on this host"] if gone else []
    if out:
        said.append(f"CPUs {format_cpu_list(out)} are beyond the CPUs nxrd's cgroup may run on")
    where = "in reach" if st.beyond else "online"
    return f"{', and '.join(said)} ({where}: {format_cpu_list(online)})"


def _assign_shared(
    st: _Allocation,
    order: list[tuple[str, Workload]],
    online: frozenset[int],
    shared: frozenset[int],
) -> None:
    load = dict.fromkeys(shared, 0)
    node_of = {c.id: c.node for c in st.topo.cpus}
    exclusive_cpus = {c: st.core_owner[core] for core in st.core_owner for c in core}
    for name, wl in order:
        if wl.is_exclusive:
            continue
        if is_front(name):  # in the request path of every replica: where nxrd runs
            st.cpus[name] = st.reserved or shared or online
            continue
        if not shared and wl.cpuset is None:
            taken = format_cpu_list(frozenset(exclusive_cpus))
            st.problem(
                name,
                "cpus" if wl.cpus else "class",
                f"no CPUs are left for shared workloads: {format_cpu_list(st.reserved) or 'none'} "
                f"reserved, {taken or 'none'} exclusive",
            )
            continue
        if wl.cpuset is not None:
            if not _cpus_exist(st, name, wl.cpuset, online):
                continue
            clash = wl.cpuset & frozenset(exclusive_cpus)
            if clash:
                owner = exclusive_cpus[min(clash)]
                st.problem(
                    name,
                    "cpuset",
                    f"CPUs {format_cpu_list(clash)} belong to exclusive workload {owner!r}",
                )
                continue
            if wl.cpuset & st.reserved:
                st.problem(
                    name,
                    "cpuset",
                    f"CPUs {format_cpu_list(wl.cpuset & st.reserved)} are reserved for the system",
                )
                continue
            got = wl.cpuset
        elif wl.cpus is not None:
            if wl.cpus > len(shared):
                st.problem(
                    name,
                    "cpus",
                    f"{name} needs {wl.cpus} CPUs; the shared pool has {len(shared)} "
                    f"({format_cpu_list(shared)})",
                )
                continue
            local = {g.node for g in st.gpus.get(name, []) if g.node is not None}
            ranked = sorted(shared, key=lambda c: (node_of[c] not in local, load[c], c))
            got = frozenset(ranked[: wl.cpus])
        else:
            got = shared
        for c in got & shared:
            load[c] += 1
        st.cpus[name] = got


def _check_memory(st: _Allocation, profile: Profile, topo: Topology) -> int:
    reserved = profile.host.reserved_memory
    usable = topo.memory - reserved
    if usable <= 0:
        st.problems.append(
            Problem(
                "host.reserved_memory",
                f"{format_size(reserved)} is not less than the host's memory "
                f"({format_size(topo.memory)})",
            )
        )
        return 0
    mins = {n: w.memory_min for n, w in profile.workloads.items() if w.memory_min}
    total = sum(_pages(v, topo.page_size) for v in mins.values())
    if total > usable:
        biggest = max(mins, key=lambda n: mins[n] or 0)
        parts = ", ".join(f"{n} {format_size(v or 0)}" for n, v in mins.items())
        st.problem(
            biggest,
            "memory_min",
            f"memory_min guarantees add up to {format_size(total)} ({parts}); the host has "
            f"{format_size(usable)} after reserving {format_size(reserved)} "
            f"({format_size(total - usable)} short)",
        )
    for name, wl in profile.workloads.items():
        if wl.memory_max is not None and wl.memory_max > usable:
            st.warnings.append(
                f"workloads.{name}.memory_max: {format_size(wl.memory_max)} is more than the "
                f"{format_size(usable)} the host has for workloads"
            )
    return total


def _check_gpu_memory(st: _Allocation, profile: Profile) -> None:
    units = gpu_units(st.topo.gpus)
    memory = {u: gpu.memory if mig is None else mig.memory for u, (gpu, mig) in units.items()}
    asked: dict[str, int] = {}
    for name, wl in profile.workloads.items():
        if wl.gpu_memory is None:
            continue
        for g in st.gpus.get(name, []):
            asked[g.uuid] = asked.get(g.uuid, 0) + wl.gpu_memory
            if memory.get(g.uuid) and asked[g.uuid] > memory[g.uuid]:
                what = f"GPU {g.index}" if units[g.uuid][1] is None else f"MIG instance {g.uuid}"
                st.problem(
                    name,
                    "gpu_memory",
                    f"{what} has {format_size(memory[g.uuid])}; gpu_memory asked of it "
                    f"adds up to {format_size(asked[g.uuid])}",
                )


def _pages(n: int, page: int) -> int:
    # The kernel keeps memory limits in pages and reads them back rounded down.
    return n // page * page


def _mems(topo: Topology, cpus: frozenset[int]) -> frozenset[int]:
    """NUMA nodes of these CPUs that have memory; the kernel refuses memoryless nodes."""
    with_memory = {n.id for n in topo.nodes if n.memory > 0}
    local = {topo.node_of(c) for c in cpus} & with_memory
    return frozenset(local or with_memory or {n.id for n in topo.nodes})


def _front_config(name: str, profile: Profile) -> str:
    """The HAProxy configuration of a front, over the replicas of its workload."""
    group = group_of(name)
    served = {n: w for n, w in profile.workloads.items() if group_of(n) == group and n != name}
    servers = [Server(n, w.port) for n, w in served.items() if w.port is not None]
    return render(group, next(iter(served.values())), servers)


def _workload_plan(
    st: _Allocation, name: str, wl: Workload, topo: Topology, profile: Profile
) -> WorkloadPlan:
    cpus = st.cpus[name]
    mems = _mems(topo, cpus)
    quota = None if wl.cpu_max is None else cpu_quota(wl.cpu_max)
    if wl.cpu_max is not None and wl.cpu_max >= len(cpus):
        st.warnings.append(
            f"workloads.{name}.cpu_max: {wl.cpu_max:g} CPUs is not below its "
            f"{len(cpus)} CPUs; the cap never binds"
        )
    low = wl.memory_low
    if low is None and CLASSES[wl.workload_class].protect_memory:
        low = wl.memory_max  # protect its working set up to its own limit
    swap = wl.swap_max
    if "swap_max" not in wl.model_fields_set and not CLASSES[wl.workload_class].swap:
        swap = 0  # a page swapped out is a request's stall on the way back in

    def pages(value: int | None) -> int | None:
        return None if value is None else _pages(value, topo.page_size)

    values = LeafValues(
        cpus=cpus,
        mems=mems,
        idle=wl.is_idle,
        weight=wl.cpu_weight or DEFAULT_WEIGHT,
        cpu_quota_us=quota,
        memory_min=_pages(wl.memory_min or 0, topo.page_size),
        memory_low=_pages(low or 0, topo.page_size),
        memory_high=pages(wl.memory_high),
        memory_max=pages(wl.memory_max),
        swap_max=pages(swap),
        zswap_max=pages(wl.zswap_max),
        pids_max=wl.pids_max,
        io_weight=wl.io_weight or DEFAULT_WEIGHT,
    )

    env: dict[str, str] = {}
    notes = list(st.notes.get(name, []))
    gpus = st.gpus.get(name, [])
    if gpus:
        # UUIDs, so CUDA's device order (fastest first by default) cannot pick other GPUs.
        visible = ",".join(g.uuid or str(g.index) for g in gpus)
        env["CUDA_VISIBLE_DEVICES"] = visible
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        # The NVIDIA container toolkit reads this one for containers the workload starts.
        env["NVIDIA_VISIBLE_DEVICES"] = visible
        if st.mps and gpus[0].shared:
            env["CUDA_MPS_PIPE_DIRECTORY"], env["CUDA_MPS_LOG_DIRECTORY"] = mps_dirs(gpus[0].uuid)
            if wl.gpu_compute is not None:
                env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(wl.gpu_compute)
            if wl.gpu_memory is not None:
                # Device 0 of what it sees; whole MiB, rounded down so the limit holds.
                env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={wl.gpu_memory >> 20}MB"
    elif topo.gpus:
        # No GPUs asked for: none visible. "void" is the toolkit's "no GPU, no driver"
        # ("none" would still mount the driver's libraries).
        if "CUDA_VISIBLE_DEVICES" not in wl.env:
            env["CUDA_VISIBLE_DEVICES"] = ""
        if "NVIDIA_VISIBLE_DEVICES" not in wl.env:
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
    threads: int | None = None
    if wl.threads == "auto":
        threads = len(cpus)
        if wl.cpu_max is not None:
            threads = max(1, min(threads, math.ceil(wl.cpu_max)))
    elif wl.threads != "off":
        threads = wl.threads
    if threads is not None:
        kept = [v for v in THREAD_VARS if v in wl.env]
        env.update({v: str(threads) for v in THREAD_VARS if v not in wl.env})
        if kept:
            notes.append(f"profile env sets {', '.join(kept)}; kept as given")
    if wl.port is not None:
        env["NXR_PORT"] = str(wl.port)
    if (index := index_of(name)) is not None:
        env["NXR_REPLICA"] = str(index)
    return WorkloadPlan(
        name=name,
        replica_of=group_of(name) if index is not None else None,
        port=wl.port,
        front_config=_front_config(name, profile) if is_front(name) else None,
        workload_class=wl.workload_class,
        cgroup=f"{wl.workload_class}/{name}",
        exclusive=wl.is_exclusive,
        cpus=format_cpu_list(cpus),
        cpu_count=len(cpus),
        cpus_requested=wl.cpus,
        mems=format_cpu_list(mems),
        gpus=gpus,
        threads=threads,
        values=values,
        env=env,
        notes=notes,
    )


def _parent_plan(cls: str, children: list[WorkloadPlan]) -> CgroupPlan:
    """Parents carry their children's protection: memory.min/low only work top-down."""
    weight = CLASSES[cls].parent_weight if cls else None
    values = ParentValues(
        weight=weight,
        idle=bool(cls) and weight is None,
        memory_min=sum(w.values.memory_min for w in children),
        memory_low=sum(w.values.memory_low for w in children),
    )
    return CgroupPlan(path=cls, values=values)
