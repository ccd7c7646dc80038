"""The planner on captured topologies: what each workload gets, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxrd.errors import PlanError, TopologyError
from nxrd.model.units import format_cpu_list, parse_cpu_list
from nxrd.plan import Plan, Topology, make_plan
from nxrd.plan.threads import THREAD_VARS
from nxrd.profile import parse_profile


def plan(text: str, topo: Topology) -> Plan:
    return make_plan(parse_profile(text, "p.toml"), topo, "p.toml")


def refused(text: str, topo: Topology) -> list[str]:
    with pytest.raises(PlanError) as info:
        plan(text, topo)
    return info.value.lines()


def cpus(p: Plan, name: str) -> frozenset[int]:
    return parse_cpu_list(p.workload(name).cpus)


def core_ids(topo: Topology, ids: frozenset[int]) -> set[tuple[int, ...]]:
    return {core for core in topo.cores() if set(core) & ids}


LC = '[workloads.{name}]\ncommand=["x"]\nclass="latency-critical"\ncpus={cpus}\n'


def test_reserved_cpus_default(vm2: Topology, smt16: Topology) -> None:
    assert plan(LC.format(name="a", cpus=1), vm2).reserved_cpus == ""  # fewer than 4 CPUs
    p = plan(LC.format(name="a", cpus=2), smt16)
    assert p.reserved_cpus == "0,16"  # CPU 0 and its SMT sibling
    assert not cpus(p, "a") & {0, 16}


def test_exclusive_workloads_get_disjoint_whole_cores_on_smt(smt16: Topology) -> None:
    text = "".join(LC.format(name=n, cpus=c) for n, c in [("a", 4), ("b", 3), ("c", 2)])
    text += '[workloads.batch]\ncommand=["x"]\nclass="batch"\n'
    p = plan(text, smt16)
    sets = {n: cpus(p, n) for n in "abc"}
    assert sets["a"] & sets["b"] == sets["a"] & sets["c"] == sets["b"] & sets["c"] == set()
    for n, got in sets.items():
        # every core touched is owned whole: both siblings belong to the workload
        assert {c for core in core_ids(smt16, got) for c in core} == got, n
    assert len(sets["b"]) == 4  # 3 CPUs rounded up to 2 whole cores
    assert any("rounded up" in note for note in p.workload("b").notes)
    shared = cpus(p, "batch")
    assert not shared & (sets["a"] | sets["b"] | sets["c"] | {0, 16})


def test_gpu_workloads_get_cores_local_to_their_gpus(socket2: Topology) -> None:
    text = (
        '[workloads.a]\ncommand=["x"]\nclass="latency-critical"\ngpus=[6]\ncpus=8\n'
        '[workloads.b]\ncommand=["x"]\nclass="latency-critical"\ngpus=2\ncpus=8\n'
    )
    p = plan(text, socket2)
    node = {c.id: c.node for c in socket2.cpus}
    assert {node[c] for c in cpus(p, "a")} == {1}  # GPU 6 is on node 1
    b_gpus = p.workload("b").gpus
    assert len({g.node for g in b_gpus}) == 1  # both GPUs on one node
    assert {node[c] for c in cpus(p, "b")} == {b_gpus[0].node}
    assert p.workload("a").mems == "1"


def test_gpu_environment(socket2: Topology, smt16: Topology) -> None:
    p = plan(
        '[workloads.a]\ncommand=["x"]\ngpus=[1,"GPU-00000003-aaaa-bbbb-cccc-000000000003"]\n'
        '[workloads.b]\ncommand=["x"]\n',
        socket2,
    )
    env = p.workload("a").env
    uuids = "GPU-00000001-aaaa-bbbb-cccc-000000000001,GPU-00000003-aaaa-bbbb-cccc-000000000003"
    assert env["CUDA_VISIBLE_DEVICES"] == uuids
    assert env["NVIDIA_VISIBLE_DEVICES"] == uuids  # containers it starts see the same GPUs
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    b = p.workload("b").env  # a GPU host hides its GPUs from b
    assert b["CUDA_VISIBLE_DEVICES"] == "" and b["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_gpu_environment_kept_as_given_without_gpus(socket2: Topology, vm2: Topology) -> None:
    p = plan(
        '[workloads.b]\ncommand=["x"]\nenv={NVIDIA_VISIBLE_DEVICES="none"}\n',
        socket2,
    )
    env = p.workload("b").env  # injected on top of the profile's env: absent means kept
    assert "NVIDIA_VISIBLE_DEVICES" not in env and env["CUDA_VISIBLE_DEVICES"] == ""
    no_gpus = plan('[workloads.b]\ncommand=["x"]\n', vm2).workload("b").env
    assert "NVIDIA_VISIBLE_DEVICES" not in no_gpus and "CUDA_VISIBLE_DEVICES" not in no_gpus


def test_gpus_are_not_given_twice_unless_shared(socket2: Topology) -> None:
    (line,) = refused(
        '[workloads.a]\ncommand=["x"]\ngpus=[2]\n'
        '[workloads.b]\ncommand=["x"]\ngpus=["GPU-00000002-aaaa-bbbb-cccc-000000000002"]\n',
        socket2,
    )
    assert "workloads.b.gpus: GPU 2 is already given to 'a'" in line
    p = plan(
        '[workloads.a]\ncommand=["x"]\ngpus=[2]\ngpu_shared=true\n'
        '[workloads.b]\ncommand=["x"]\ngpus=[2]\ngpu_shared=true\n',
        socket2,
    )
    assert p.workload("a").gpus[0].index == p.workload("b").gpus[0].index == 2
    counted = plan("".join(f'[workloads.w{i}]\ncommand=["x"]\ngpus=1\n' for i in range(8)), socket2)
    assert sorted(w.gpus[0].index for w in counted.workloads) == list(range(8))


def test_gpu_refusals_say_why(smt16: Topology, vm2: Topology, socket2: Topology) -> None:
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=2\n', smt16)
    assert line == "p.toml: workloads.a.gpus: needs 2 GPU(s); 1 free of 1"
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=[3]\n', smt16)
    assert line.startswith("p.toml: workloads.a.gpus: GPU 3 does not exist (host GPUs: 0 (GPU-")
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=1\n', vm2)
    assert line.startswith("p.toml: workloads.a.gpus: needs 1 GPU(s); no GPUs on this host")
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=[0]\ngpu_memory="81G"\n', socket2)
    assert (
        line
        == "p.toml: workloads.a.gpu_memory: GPU 0 has 80G; gpu_memory asked of it adds up to 81G"
    )


def test_what_does_not_fit_is_refused_with_how_much(smt16: Topology, vm2: Topology) -> None:
    (line,) = refused(LC.format(name="chat", cpus=40), smt16)
    assert line == (
        "p.toml: workloads.chat.cpus: chat needs 20 exclusive cores; 15 are free after "
        "reserving 0,16 (5 short)"
    )
    (line,) = refused(LC.format(name="a", cpus=26) + LC.format(name="chat", cpus=6), smt16)
    assert line == (
        "p.toml: workloads.chat.cpus: chat needs 3 exclusive cores; 2 are free after "
        "reserving 0,16 and giving cores to a (1 short)"
    )
    assert plan(LC.format(name="a", cpus=30), smt16).workload("a").cpu_count == 30  # exact fit
    (line,) = refused(LC.format(name="a", cpus=2) + '[workloads.b]\ncommand=["x"]\n', vm2)
    assert line == (
        "p.toml: workloads.b.class: no CPUs are left for shared workloads: none reserved, "
        "0-1 exclusive"
    )
    (line,) = refused('[workloads.b]\ncommand=["x"]\ncpus=3\n', vm2)
    assert line == "p.toml: workloads.b.cpus: b needs 3 CPUs; the shared pool has 2 (0-1)"


def test_every_problem_is_reported_together(smt16: Topology) -> None:
    lines = refused(
        LC.format(name="a", cpus=40)
        + '[workloads.b]\ncommand=["x"]\ngpus=4\n[workloads.c]\ncommand=["x"]\ncpuset="99"\n',
        smt16,
    )
    assert [line.split(": ")[1] for line in lines] == [
        "workloads.b.gpus",
        "workloads.a.cpus",
        "workloads.c.cpuset",
    ]


def test_explicit_cpusets(smt16: Topology) -> None:
    (line,) = refused('[workloads.a]\ncommand=["x"]\ncpuset="0-1"\n', smt16)
    assert line == "p.toml: workloads.a.cpuset: CPUs 0 are reserved for the system"
    p = plan(
        '[workloads.a]\ncommand=["x"]\nexclusive=true\ncpuset="3"\n[workloads.b]\ncommand=["x"]\n',
        smt16,
    )
    assert p.workload("a").cpus == "3"
    assert not cpus(p, "b") & {3, 19}  # 3's sibling stays idle rather than shared
    assert any("siblings 19 left idle" in n for n in p.workload("a").notes)
    (line,) = refused(
        '[workloads.a]\ncommand=["x"]\nexclusive=true\ncpuset="3"\n'
        '[workloads.b]\ncommand=["x"]\ncpuset="19"\n',
        smt16,
    )
    assert line == "p.toml: workloads.b.cpuset: CPUs 19 belong to exclusive workload 'a'"


def test_memory_guarantees_must_fit(smt16: Topology) -> None:
    text = (
        '[host]\nreserved_memory="8G"\n'
        '[workloads.a]\ncommand=["x"]\nmemory_min="100G"\n'
        '[workloads.b]\ncommand=["x"]\nmemory_min="30G"\n'
    )
    (line,) = refused(text, smt16)
    assert line == (
        "p.toml: workloads.a.memory_min: memory_min guarantees add up to 130G (a 100G, b 30G); "
        "the host has 120G after reserving 8G (10G short)"
    )
    (line,) = refused('[host]\nreserved_memory="1T"\n[workloads.a]\ncommand=["x"]\n', smt16)
    assert line.startswith("p.toml: host.reserved_memory: 1T is not less than")


def test_cgroup_values(smt16: Topology) -> None:
    p = plan(
        LC.format(name="chat", cpus=4) + 'memory_max="1000000"\nmemory_min="4097"\npids_max=99\n'
        '[workloads.embed]\ncommand=["x"]\nclass="batch"\ncpu_max="150%"\ncpu_weight=20\n'
        'io_weight=500\nswap_max="0"\n'
        '[workloads.idx]\ncommand=["x"]\nclass="background"\n',
        smt16,
    )
    chat = p.workload("chat").files
    assert chat["cpu.max"] == "max 100000"  # latency-critical: never capped
    assert chat["memory.max"] == str(1000000 // 4096 * 4096)  # whole pages, as the kernel keeps
    assert chat["memory.min"] == "4096"
    assert chat["memory.low"] == chat["memory.max"]  # latency-critical protects up to its limit
    assert chat["pids.max"] == "99" and chat["memory.oom.group"] == "1"
    embed = p.workload("embed").files
    assert embed["cpu.max"] == "150000 100000" and embed["cpu.weight"] == "20"
    assert embed["io.weight"] == "default 500" and embed["memory.swap.max"] == "0"
    idx = p.workload("idx").files
    assert idx["cpu.idle"] == "1" and "cpu.weight" not in idx  # idle groups take no weight
    assert list(chat)[:2] == ["cpuset.cpus", "cpuset.mems"]
    classes = {c.path: c.files for c in p.classes}
    assert classes["latency-critical"]["cpu.weight"] == "1000"
    assert classes["batch"]["cpu.weight"] == "50"
    assert classes["background"]["cpu.idle"] == "1"
    # Protection flows top-down: the parents carry the sum of their children's.
    assert classes["latency-critical"]["memory.min"] == "4096"
    assert p.root.files["memory.low"] == chat["memory.low"]


def test_threads_follow_the_cpus_given(smt16: Topology) -> None:
    p = plan(
        LC.format(name="a", cpus=3) + '[workloads.b]\ncommand=["x"]\ncpus=6\ncpu_max="250%"\n'
        '[workloads.c]\ncommand=["x"]\nthreads="off"\n'
        '[workloads.d]\ncommand=["x"]\nthreads=3\nenv={OMP_NUM_THREADS="1"}\n',
        smt16,
    )
    a = p.workload("a")
    assert a.threads == 4 and all(a.env[v] == "4" for v in THREAD_VARS)  # 2 whole cores
    assert p.workload("b").threads == 3  # 6 CPUs, but cpu.max allows 2.5 of them
    assert not set(THREAD_VARS) & set(p.workload("c").env)
    d = p.workload("d")
    assert "OMP_NUM_THREADS" not in d.env and d.env["MKL_NUM_THREADS"] == "3"
    assert any("kept as given" in n for n in d.notes)


def test_shared_workloads_spread_over_the_pool(smt16: Topology) -> None:
    p = plan("".join(f'[workloads.w{i}]\ncommand=["x"]\ncpus=10\n' for i in range(3)), smt16)
    load: dict[int, int] = {}
    for w in p.workloads:
        for c in cpus(p, w.name):
            load[c] = load.get(c, 0) + 1
    assert max(load.values()) - min(load.values()) <= 1


def test_plan_json_round_trips(socket2: Topology) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = make_plan(parse_profile((root / "profiles/gpu-two-models.toml").read_text()), socket2)
    again = Plan.model_validate_json(p.to_json())
    assert again == p
    assert '"class": "latency-critical"' in p.to_json()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.booleans()), min_size=1, max_size=8), st.data())
def test_any_plan_keeps_exclusive_cores_disjoint(
    specs: list[tuple[int, bool]], data: st.DataObject
) -> None:
    from nxrd.plan import load_topology
    from tests.unit.conftest import TOPOLOGIES

    topo = load_topology(
        TOPOLOGIES / data.draw(st.sampled_from(["smt16-1gpu.json", "2socket-8gpu.json"]))
    )
    # nxrd's reach: the whole host, or any CPUs of it (a parent's cpuset)
    ids = sorted(c.id for c in topo.cpus)
    reach = data.draw(st.one_of(st.none(), st.sets(st.sampled_from(ids), min_size=1)))
    text = "".join(
        f'[workloads.w{i}]\ncommand=["x"]\ncpus={n}\nexclusive={str(ex).lower()}\n'
        for i, (n, ex) in enumerate(specs)
    )
    try:
        planned_on = topo if reach is None else _limited(topo, format_cpu_list(reach))
        p = make_plan(parse_profile(text), planned_on)
    except PlanError as e:
        assert all("workloads.w" in line for line in e.lines())
        return
    reserved = parse_cpu_list(p.reserved_cpus) if p.reserved_cpus else frozenset()
    assert parse_cpu_list(p.daemon_cpus) <= (reach or set(ids))
    owned: set[int] = set()
    for w in p.workloads:
        got = cpus(p, w.name)
        assert got <= (reach or set(ids))
        assert not got & reserved
        assert w.cpu_count >= (w.cpus_requested or 1)
        if w.exclusive:
            whole = {c for core in core_ids(topo, got) for c in core}
            assert whole == got and not whole & owned
            owned |= whole
    for w in p.workloads:
        if not w.exclusive:
            assert not cpus(p, w.name) & owned


def test_real_h100_capture_plans_without_numa_information() -> None:
    from nxrd.plan import load_topology
    from tests.unit.conftest import TOPOLOGIES

    topo = load_topology(TOPOLOGIES / "h100-vm.json")  # captured on a lent H100 machine
    p = plan(
        '[workloads.model]\ncommand=["x"]\nclass="latency-critical"\ngpus=1\ncpus=2\n'
        '[workloads.cpu-only]\ncommand=["x"]\nclass="batch"\n',
        topo,
    )
    model = p.workload("model")
    assert model.gpus[0].uuid == "GPU-9ad9aab9-55cd-f074-e962-ff5878728e44"
    assert model.gpus[0].node is None and model.cpus == "1-2"
    assert p.workload("cpu-only").env["CUDA_VISIBLE_DEVICES"] == ""
    assert model.env["NVIDIA_VISIBLE_DEVICES"] == "GPU-9ad9aab9-55cd-f074-e962-ff5878728e44"


def test_explicit_exclusive_cpuset_may_not_share_a_core_with_reserved_cpus(
    smt16: Topology,
) -> None:
    (line,) = refused(
        '[host]\nreserved_cpus = "0"\n'
        '[workloads.a]\ncommand=["x"]\nclass="latency-critical"\ncpuset="16"\n',
        smt16,
    )
    assert line == (
        "p.toml: workloads.a.cpuset: shares a core with reserved CPUs 0; "
        "exclusive workloads own whole cores"
    )


def test_gpu_workloads_choose_cores_first(socket2: Topology) -> None:
    p = plan(
        LC.format(name="a", cpus=40)
        + '[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\ncpus=32\ngpus=4\n',
        socket2,
    )
    node = {c.id: c.node for c in socket2.cpus}
    chat_gpu_node = p.workload("chat").gpus[0].node
    assert {node[c] for c in cpus(p, "chat")} == {chat_gpu_node}
    assert not p.workload("chat").notes


def test_the_same_gpu_by_index_and_uuid(smt16: Topology) -> None:
    (line,) = refused(
        '[workloads.a]\ncommand=["x"]\ngpus=[0, "GPU-6f1c2a44-0b1e-4c3a-9d2e-1a2b3c4d5e6f"]\n'
        "gpu_shared = true\n",
        smt16,
    )
    assert line == (
        "p.toml: workloads.a.gpus: lists GPU 0 twice (as 0 and GPU-6f1c2a44-0b1e-4c3a-9d2e-1a2b3c4d5e6f)"
    )


def _variant(topo: Topology, **changes: object) -> Topology:
    return Topology.model_validate({**topo.model_dump(), **changes})


def test_gpu_counts_pick_gpus_with_room_for_gpu_memory(socket2: Topology) -> None:
    gpus = [g.model_dump() for g in socket2.gpus[:2]]
    gpus[0]["memory"] = 8 << 30
    topo = _variant(socket2, gpus=gpus)
    p = plan('[workloads.a]\ncommand=["x"]\ngpus=1\ngpu_memory="40G"\n', topo)
    assert [g.index for g in p.workload("a").gpus] == [1]
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=2\ngpu_memory="40G"\n', topo)
    assert line == (
        "p.toml: workloads.a.gpus: needs 2 GPU(s) with 40G (gpu_memory); "
        "1 of the 2 free GPUs have that much left"
    )


def test_mixed_core_sizes_count_short_in_cpus(smt16: Topology) -> None:
    cpus_ = [c.model_dump() for c in smt16.cpus if c.id < 8 or 16 <= c.id < 20]
    topo = _variant(smt16, cpus=cpus_, gpus=[])  # 4 two-thread cores + 4 single-thread cores
    (line,) = refused('[host]\nreserved_cpus="0,16"\n' + LC.format(name="a", cpus=11), topo)
    assert line == (
        "p.toml: workloads.a.cpus: a needs 11 exclusive CPUs in whole cores; 10 are free "
        "after reserving 0,16 (1 short)"
    )


def test_memoryless_nodes_are_left_out_of_mems(socket2: Topology) -> None:
    topo = _variant(socket2, nodes=[{"id": 0, "memory": 1 << 40}, {"id": 1, "memory": 0}])
    p = plan('[workloads.a]\ncommand=["x"]\ngpus=[4]\ncpus=4\n', topo)
    assert {socket2.node_of(c) for c in cpus(p, "a")} == {1}
    assert p.workload("a").mems == "0"


def test_every_file_is_written_explicitly(vm2: Topology) -> None:
    files = plan('[workloads.a]\ncommand=["x"]\n', vm2).workload("a").files
    assert files["cpu.idle"] == "0" and list(files).index("cpu.idle") < list(files).index(
        "cpu.weight"
    )
    assert files["memory.swap.max"] == "max" and files["io.weight"] == "default 100"
    assert (
        plan('[workloads.a]\ncommand=["x"]\nmemory_max="6K"\n', _variant(vm2, page_size=65536))
        .workload("a")
        .files["memory.max"]
        == "0"
    )


def test_quarantined_gpus_get_no_new_placements(socket2: Topology, smt16: Topology) -> None:
    gpu0, gpu2 = socket2.gpus[0].uuid, socket2.gpus[2].uuid
    text = '[workloads.a]\ncommand=["x"]\ngpus=2\n[workloads.b]\ncommand=["x"]\ngpus=[2]\n'
    p = make_plan(parse_profile(text), socket2, avoid={gpu0: "Xid 79", gpu2: "Xid 48"})
    assert [g.index for g in p.workload("a").gpus] == [1, 3]  # counts avoid 0 and 2
    assert [g.index for g in p.workload("b").gpus] == [2]  # named: it stays, with a warning
    assert p.warnings == [
        "workloads.b.gpus: GPU 2 is quarantined (Xid 48); it stays there because the profile "
        "names it"
    ]
    with pytest.raises(PlanError) as info:
        make_plan(
            parse_profile('[workloads.a]\ncommand=["x"]\ngpus=1\n', "p.toml"),
            smt16,
            "p.toml",
            avoid={smt16.gpus[0].uuid: "not answering"},
        )
    assert info.value.lines() == [
        "p.toml: workloads.a.gpus: needs 1 GPU(s); 0 free of 1 (GPUs 0 are quarantined)"
    ]


def test_planning_again_keeps_the_gpus_a_workload_holds_while_it_may(socket2: Topology) -> None:
    uuid = [g.uuid for g in socket2.gpus]
    text = '[workloads.a]\ncommand=["x"]\ngpus=2\n[workloads.b]\ncommand=["x"]\ngpus=1\n'

    def gpus(text: str, keep: dict[str, list[str]], **kw: object) -> dict[str, list[int]]:
        p = make_plan(parse_profile(text), socket2, keep=keep, **kw)  # type: ignore[arg-type]
        return {w.name: [g.index for g in w.gpus] for w in p.workloads}

    assert gpus(text, {}) == {"a": [0, 1], "b": [2]}
    assert gpus(text, {"a": [uuid[5], uuid[6]], "b": [uuid[0]]}) == {"a": [5, 6], "b": [0]}
    # not kept: a GPU now quarantined, now named by another workload, or a changed count
    assert gpus(text, {"a": [uuid[5], uuid[6]], "b": [uuid[0]]}, avoid={uuid[6]: "Xid 79"}) == {
        "a": [1, 2],
        "b": [0],
    }
    named = text + '[workloads.c]\ncommand=["x"]\ngpus=[0]\n'
    assert gpus(named, {"b": [uuid[0]]}) == {"a": [1, 2], "b": [3], "c": [0]}
    assert gpus(text.replace("gpus=2", "gpus=3"), {"a": [uuid[5], uuid[6]]}) == {
        "a": [0, 1, 2],
        "b": [3],
    }
    # nor a GPU its gpu_memory no longer fits on beside a neighbour's (80G each here)
    shared = (
        '[workloads.a]\ncommand=["x"]\ngpus=1\ngpu_shared=true\ngpu_memory="30G"\n'
        '[workloads.c]\ncommand=["x"]\ngpus=1\ngpu_shared=true\ngpu_memory="55G"\n'
    )
    assert gpus(shared, {"a": [uuid[0]], "c": [uuid[0]]}) == {"a": [0], "c": [1]}


def _mig(socket2: Topology, **gpu2: object) -> Topology:
    """socket2 with GPU 2 split into two MIG instances (MIG-a of 10G, MIG-b of 20G)."""
    gpus = [g.model_dump() for g in socket2.gpus]
    mig = [
        {"index": 0, "uuid": "MIG-a", "name": "1g.10gb", "memory": 10 << 30},
        {"index": 1, "uuid": "MIG-b", "name": "2g.20gb", "memory": 20 << 30},
    ]
    gpus[2].update(mig=True, mig_instances=mig, **gpu2)
    return _variant(socket2, gpus=gpus)


def test_mig_instances_are_given_by_uuid_and_never_whole(socket2: Topology) -> None:
    topo = _mig(socket2)
    text = (
        '[workloads.a]\ncommand=["x"]\ngpus=["MIG-a"]\ngpu_memory="8G"\n'
        '[workloads.b]\ncommand=["x"]\ngpus=["MIG-b"]\n'
        '[workloads.c]\ncommand=["x"]\ngpus=3\n'
    )
    p = plan(text, topo)
    assert [(g.index, g.uuid) for g in p.workload("a").gpus] == [(2, "MIG-a")]
    assert p.workload("a").env["CUDA_VISIBLE_DEVICES"] == "MIG-a"
    assert p.workload("a").env["NVIDIA_VISIBLE_DEVICES"] == "MIG-a"
    assert [g.uuid for g in p.workload("b").gpus] == ["MIG-b"]
    assert 2 not in [g.index for g in p.workload("c").gpus]  # a count takes whole GPUs only
    # a node near the instance's GPU, as for a whole GPU
    assert p.workload("a").gpus[0].node == socket2.gpus[2].node

    def one(text: str) -> str:
        (line,) = refused(text, topo)
        return line

    assert one('[workloads.a]\ncommand=["x"]\ngpus=[2]\n') == (
        "p.toml: workloads.a.gpus: GPU 2 has MIG enabled: name one of its MIG instances by "
        "UUID (MIG-a, MIG-b)"
    )
    assert one('[workloads.a]\ncommand=["x"]\ngpus=["MIG-a", "MIG-b"]\n') == (
        "p.toml: workloads.a.gpus: lists several MIG instances: a CUDA process uses only the "
        "first it is given, so give each instance its own workload"
    )
    assert one('[workloads.a]\ncommand=["x"]\ngpus=["MIG-a"]\ngpu_memory="12G"\n') == (
        "p.toml: workloads.a.gpu_memory: MIG instance MIG-a has 10G; gpu_memory asked of it "
        "adds up to 12G"
    )
    assert one('[workloads.a]\ncommand=["x"]\ngpus=8\n') == (
        "p.toml: workloads.a.gpus: needs 8 GPU(s); 7 free of 8 (GPUs 2 are split by MIG "
        "(name an instance by UUID))"
    )


def test_compute_modes_decide_who_may_use_a_gpu(socket2: Topology) -> None:
    gpus = [g.model_dump() for g in socket2.gpus]
    gpus[0]["compute_mode"] = "prohibited"
    gpus[1]["compute_mode"] = "exclusive-process"
    topo = _variant(socket2, gpus=gpus)
    # a count never takes a prohibited GPU
    assert [
        g.index for g in plan('[workloads.a]\ncommand=["x"]\ngpus=1\n', topo).workload("a").gpus
    ] == [1]
    (line,) = refused('[workloads.a]\ncommand=["x"]\ngpus=[0]\n', topo)
    assert line == (
        "p.toml: workloads.a.gpus: GPU 0's compute mode is prohibited: no CUDA process may use "
        "it (nvidia-smi -i 0 -c DEFAULT allows it)"
    )
    shared = (
        '[workloads.a]\ncommand=["x"]\ngpus=[1]\ngpu_shared=true\n'
        '[workloads.b]\ncommand=["x"]\ngpus=[1]\ngpu_shared=true\n'
    )
    (line,) = refused(shared, topo)
    assert line == (
        "p.toml: workloads.b.gpus: GPU 1 is in exclusive-process compute mode, one CUDA "
        "process at a time, so 'a' and 'b' cannot share it: share it under MPS ([host] mps = "
        "true) or allow several processes (nvidia-smi -i 1 -c DEFAULT)"
    )
    # under MPS its one process is the MPS server: sharing is what the mode is for
    under_mps = plan("[host]\nmps = true\n" + shared, topo)
    assert [g.index for g in under_mps.workload("b").gpus] == [1]
    # a count that may share does not join a workload on it without MPS
    counted = (
        '[workloads.big]\ncommand=["x"]\ngpus=[2, 3, 4, 5, 6, 7]\n'
        '[workloads.x]\ncommand=["x"]\ngpus=1\ngpu_shared=true\n'
        '[workloads.y]\ncommand=["x"]\ngpus=1\ngpu_shared=true\n'
    )
    (line,) = refused(counted, topo)
    assert line == (
        "p.toml: workloads.y.gpus: needs 1 GPU(s); 0 free of 8 (GPUs 1-7 are taken; GPUs 1 "
        "are in an exclusive compute mode (shared only under MPS); GPUs 0 are in prohibited "
        "compute mode)"
    )
    under_mps = plan("[host]\nmps = true\n" + counted, topo)
    assert [g.index for g in under_mps.workload("y").gpus] == [1]
    # only GPUs that are in use are named for their mode
    two = _variant(socket2, gpus=[dict(g, compute_mode="exclusive-process") for g in gpus[:2]])
    (line,) = refused(
        '[workloads.a]\ncommand=["x"]\ngpus=[0]\ngpu_shared=true\n'
        '[workloads.b]\ncommand=["x"]\ngpus=2\ngpu_shared=true\n',
        two,
    )
    assert line == (
        "p.toml: workloads.b.gpus: needs 2 GPU(s); 1 free of 2 (GPUs 0 are taken; GPUs 0 are "
        "in an exclusive compute mode (shared only under MPS))"
    )


def _limited(topo: Topology, cpus: str = "", mems: str = "") -> Topology:
    cgroup = topo.cgroup.model_copy(update={"cpus": cpus, "mems": mems})
    return topo.model_copy(update={"cgroup": cgroup})


def test_a_parents_cpu_limit_is_planned_within_and_said(smt16: Topology) -> None:
    # under systemd's AllowedCPUs=0-3,16-19: 4 cores of 16, CPU 0's reserved by default
    text = LC.format(name="a", cpus=2) + '[workloads.b]\ncommand=["x"]\nclass="batch"\n'
    p = plan(text, _limited(smt16, "0-3,16-19"))
    assert p.online_cpus == "0-3,16-19"
    assert p.reserved_cpus == "0,16"
    assert cpus(p, "a") | cpus(p, "b") <= {1, 2, 3, 17, 18, 19}
    assert not cpus(p, "a") & cpus(p, "b")
    assert parse_cpu_list(p.daemon_cpus) <= {0, 16}
    assert p.warnings == [
        "planning on CPUs 0-3,16-19 of the 0-31 online: nxrd's cgroup may run only on those "
        "(cpuset.cpus.effective, a parent's limit such as systemd's AllowedCPUs=)"
    ]
    # what does not fit in reach is refused as on a smaller host
    assert refused(LC.format(name="a", cpus=8), _limited(smt16, "0-3,16-19"))
    # a reserved CPU out of reach is kept from workloads already: said, not refused
    host = '[host]\nreserved_cpus = "0,8,16"\n'
    p = plan(host + LC.format(name="a", cpus=1), _limited(smt16, "0-3,16-19"))
    assert p.reserved_cpus == "0,16"
    assert p.warnings[-1] == (
        "host.reserved_cpus: CPUs 8 are beyond the CPUs nxrd's cgroup may run on, so no "
        "workload runs there anyway"
    )
    # all of them out of reach: nxrd still keeps itself off exclusive cores, as by default
    host = '[host]\nreserved_cpus = "8,24"\n'
    p = plan(host + LC.format(name="a", cpus=6), _limited(smt16, "0-3,16-19"))
    assert p.reserved_cpus == "0,16" and p.daemon_cpus == "0,16"
    assert p.warnings[-1] == (
        "host.reserved_cpus: CPUs 8,24 are beyond the CPUs nxrd's cgroup may run on, so no "
        "workload runs there anyway; within reach nxrd reserves 0,16, as by default"
    )
    # one the host lacks is refused, and one out of reach beside it is named too
    assert refused(
        '[host]\nreserved_cpus = "8,40"\n' + LC.format(name="a", cpus=1),
        _limited(smt16, "0-3,16-19"),
    ) == [
        "p.toml: host.reserved_cpus: CPUs 40 are not online on this host, and CPUs 8 are beyond "
        "the CPUs nxrd's cgroup may run on (in reach: 0-3,16-19)"
    ]
    # so is a cpuset out of reach, apart from CPUs the host does not have
    pinned = '[workloads.a]\ncommand=["x"]\nclass="latency-critical"\ncpuset="{}"\n'
    assert refused(pinned.format("8,40"), _limited(smt16, "0-3,16-19")) == [
        "p.toml: workloads.a.cpuset: CPUs 40 are not online on this host, and CPUs 8 are beyond "
        "the CPUs nxrd's cgroup may run on (in reach: 0-3,16-19)"
    ]
    assert refused(pinned.format("40"), smt16) == [
        "p.toml: workloads.a.cpuset: CPUs 40 are not online on this host (online: 0-31)"
    ]
    # a limit that leaves every CPU says nothing
    assert plan(text, _limited(smt16, "0-31")).warnings == []


def test_cores_split_by_the_reach_go_to_shared_workloads_only(smt16: Topology) -> None:
    # AllowedCPUs=0-7,16-19 on 16 cores of two threads (CPU N's sibling is N+16): cores 4-7
    # keep their siblings 20-23 outside, where the rest of the system may run
    text = LC.format(name="a", cpus=6) + '[workloads.b]\ncommand=["x"]\nclass="batch"\n'
    p = plan(text, _limited(smt16, "0-7,16-19"))
    assert cpus(p, "a") == {1, 2, 3, 17, 18, 19}
    assert cpus(p, "b") == {4, 5, 6, 7}
    assert p.warnings[-1] == (
        "CPUs 4-7 share cores with CPUs beyond nxrd's reach (20-23): no exclusive workload "
        "gets them, only shared ones"
    )
    # a split core that is reserved anyway is not said to be left out
    assert plan(text, _limited(smt16, "0-15,17-31")).warnings == [
        "planning on CPUs 0-15,17-31 of the 0-31 online: nxrd's cgroup may run only on those "
        "(cpuset.cpus.effective, a parent's limit such as systemd's AllowedCPUs=)"
    ]
    # one more core than the whole ones left is refused, saying why fewer were free
    assert refused(LC.format(name="a", cpus=8), _limited(smt16, "0-7,16-19")) == [
        "p.toml: workloads.a.cpus: a needs 8 exclusive CPUs in whole cores; 6 are free after "
        "reserving 0,16 and leaving out CPUs 4-7 (cores split by the reach) (2 short)"
    ]
    pinned = '[workloads.a]\ncommand=["x"]\nclass="latency-critical"\ncpuset="5"\n'
    assert refused(pinned, _limited(smt16, "0-7,16-19")) == [
        "p.toml: workloads.a.cpuset: shares a core with CPUs 21, beyond the CPUs nxrd's cgroup "
        "may run on; exclusive workloads own whole cores"
    ]


def test_a_gpu_whose_node_is_out_of_reach_says_so(socket2: Topology) -> None:
    # nxrd may run only on node 1's CPUs; GPU 0 sits on node 0
    gpu0 = '[workloads.a]\ncommand=["x"]\nclass="latency-critical"\ngpus=[0]\ncpus=4\n'
    p = plan(gpu0, _limited(socket2, "32-63,96-127"))
    assert {socket2.node_of(c) for c in cpus(p, "a")} == {1}
    assert p.workload("a").notes == [
        "not all cores are NUMA-local to its GPUs (not enough free cores on node 0 with "
        "every thread within nxrd's reach)"
    ]
    # with every CPU in reach, the same GPU gets cores on its own node and no note
    p = plan(gpu0, socket2)
    assert {socket2.node_of(c) for c in cpus(p, "a")} == {0}
    assert not p.workload("a").notes
    # more cores than its node has: the plain note, also where the reach cuts only the
    # other node
    big = gpu0.replace("cpus=4", "cpus=70")
    plain = ["not all cores are NUMA-local to its GPUs (not enough free cores on node 0)"]
    assert plan(big, socket2).workload("a").notes == plain
    assert plan(big, _limited(socket2, "0-47,64-111")).workload("a").notes == plain


def test_memory_nodes_out_of_reach_are_planned_as_memoryless(socket2: Topology) -> None:
    text = LC.format(name="a", cpus=2) + '[workloads.b]\ncommand=["x"]\nclass="batch"\n'
    p = plan(text, _limited(socket2, mems="1"))
    assert {w.files["cpuset.mems"] for w in p.workloads} == {"1"}
    assert p.memory == socket2.nodes[1].memory
    assert p.warnings[0].startswith("planning on the memory of NUMA nodes 1 only:")


def test_no_cpu_within_reach_is_refused_in_a_sentence(vm2: Topology) -> None:
    with pytest.raises(TopologyError, match=r"^nxrd's cgroup may run only on CPUs 5-6, none "):
        plan(LC.format(name="a", cpus=1), _limited(vm2, "5-6"))


def test_zswap_max_is_written_only_when_set_and_put_back_when_taken_out(vm2: Topology) -> None:
    from nxrd.kernel.apply import apply_plan
    from nxrd.kernel.cgroupfs import FakeCgroupFS
    from nxrd.plan.diff import diff

    base = '[workloads.embed]\ncommand = ["e"]\nclass = "batch"\n'
    with_zswap = parse_profile(base + 'zswap_max = "256M"\n')
    without = parse_profile(base)
    set_plan, unset_plan = make_plan(with_zswap, vm2), make_plan(without, vm2)
    assert set_plan.workloads[0].files["memory.zswap.max"] == str(256 << 20)
    # not set: not written, so a kernel without zswap (no such file) still runs it
    assert "memory.zswap.max" not in unset_plan.workloads[0].files
    fs = FakeCgroupFS()
    apply_plan(set_plan, fs)
    assert fs.read("batch/embed", "memory.zswap.max") == str(256 << 20)
    changes = diff((with_zswap, set_plan), (without, unset_plan))
    assert [(c.what, c.new, c.effect) for c in changes] == [("memory.zswap.max", "max", "live")]
    apply_plan(unset_plan, fs)
    assert fs.read("batch/embed", "memory.zswap.max") == "max"
