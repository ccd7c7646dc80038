"""`replicas = N`: N copies of a workload, each with its own leaf, cores, GPUs and port."""

from __future__ import annotations

import pytest

from nxrd.api.handlers import Handlers
from nxrd.api.protocol import ApiError, Request
from nxrd.api.server import Access
from nxrd.cli.format import status_table, top_screen
from nxrd.errors import PlanError, ProfileError
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.model.plan import Plan
from nxrd.model.replicas import group_of, index_of
from nxrd.model.topology import load_topology
from nxrd.model.units import parse_cpu_list
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES

CHAT = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 2
replicas = 3
port = 8000
ready = {http = "http://127.0.0.1:8000/health"}
slo = {p99 = "100ms", source = {prometheus = {url = "http://127.0.0.1:8000/metrics", metric = "m"}}}

[workloads.embed]
command = ["embed"]
class = "batch"
after = ["chat"]
"""


def plan_of(text: str, topology: str = "smt16-1gpu") -> Plan:
    return make_plan(parse_profile(text), load_topology(TOPOLOGIES / f"{topology}.json"))


def test_each_replica_is_a_workload_of_its_own_with_its_own_port_and_address() -> None:
    profile = parse_profile(CHAT)
    assert list(profile.workloads) == ["chat.0", "chat.1", "chat.2", "embed"]
    second = profile.workloads["chat.1"]
    assert second.port == 8001
    assert second.ready is not None and second.ready.http == "http://127.0.0.1:8001/health"
    assert second.slo is not None and second.slo.source.prometheus is not None
    assert second.slo.source.prometheus.url == "http://127.0.0.1:8001/metrics"
    # waiting for a replicated workload is waiting for every replica
    assert profile.workloads["embed"].after == ("chat.0", "chat.1", "chat.2")
    assert [(group_of(n), index_of(n)) for n in ("chat.2", "embed")] == [
        ("chat", 2),
        ("embed", None),
    ]


def test_exclusive_replicas_get_disjoint_cores_their_index_and_port() -> None:
    plan = plan_of(CHAT)
    replicas = [w for w in plan.workloads if w.replica_of == "chat"]
    assert [w.cgroup for w in replicas] == [f"latency-critical/chat.{i}" for i in range(3)]
    cores = [parse_cpu_list(w.cpus) for w in replicas]
    assert all(len(c) == 2 for c in cores)
    assert len(frozenset().union(*cores)) == 6  # no CPU given twice
    assert [(w.env["NXR_PORT"], w.env["NXR_REPLICA"]) for w in replicas] == [
        ("8000", "0"),
        ("8001", "1"),
        ("8002", "2"),
    ]
    embed = plan.workload("embed")
    assert embed.replica_of is None and "NXR_REPLICA" not in embed.env
    assert not parse_cpu_list(embed.cpus) & frozenset().union(*cores)
    # plans without replicas keep their JSON as it was; a replica's says what it is
    assert '"replica_of": "chat"' in plan.to_json()
    assert '"replica_of"' not in plan_of('[workloads.a]\ncommand=["a"]\n').to_json()


def test_a_gpu_per_replica_each_on_cores_near_its_gpu() -> None:
    text = CHAT.replace("cpus = 2", "cpus = 2\ngpus = 1").replace("replicas = 3", "replicas = 4")
    plan = plan_of(text, "2socket-8gpu")
    replicas = [w for w in plan.workloads if w.replica_of == "chat"]
    assert len({w.gpus[0].index for w in replicas}) == 4
    assert all(w.mems == str(w.gpus[0].node) for w in replicas)


def test_replicas_that_do_not_fit_are_refused_once_at_the_declared_key() -> None:
    with pytest.raises(PlanError) as e:
        plan_of(CHAT.replace("replicas = 3", "replicas = 20"))
    lines = [line for line in e.value.lines() if "workloads.chat." in line]
    # 32 CPUs, 2 reserved: 15 replicas of 2 fit
    assert lines == [
        "workloads.chat.cpus: chat.15 needs 1 exclusive cores; 0 are free after reserving 0,16"
        " and giving cores to chat (15 replicas) (1 short); 4 more replicas too"
    ]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("cpus = 2", 'cpuset = "2-3"'), "workloads.chat.cpuset: every replica would get the same"),
        (("cpus = 2", "cpus = 2\ngpus = [0]"), "workloads.chat.gpus: every replica would get"),
        (("port = 8000", "port = 65534"), "workloads.chat.port: replica 2 would listen on 65536"),
        (("8000/health", "9000/health"), "workloads.chat.ready.http: names port 9000, not"),
        (("port = 8000\n", ""), "workloads.chat.ready.http: replicas are each checked at their"),
        (('class = "batch"', 'class = "batch"\nport = 8002'), "workloads.embed.port: port 8002"),
    ],
)
def test_what_cannot_go_to_every_replica_alike_is_a_clear_error(
    change: tuple[str, str], said: str
) -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(CHAT.replace(*change))
    assert any(line.startswith(said) for line in e.value.lines()), e.value.lines()


def test_status_shows_replicas_under_their_workload() -> None:
    def row(name: str, state: str = "ready") -> dict[str, object]:
        return {"name": name, "class": "batch", "state": state, "cpus": "1", "restarts": 1}

    lines = status_table([row("chat.0"), row("chat.1", "starting"), row("embed")]).splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        ["chat", "batch", "1/2"],
        ["chat.0", "batch", "ready"],
        ["chat.1", "batch", "starting"],
        ["embed", "batch", "ready"],
    ]
    assert lines[2].startswith("  chat.0")


def test_a_verb_on_the_workload_reaches_every_replica() -> None:
    profile = parse_profile(CHAT)
    plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    rt = FakeRuntime()
    sup = Supervisor(profile, plan, rt, EventLog(), lambda: 0.0)
    sup.tick(0.0)
    handlers = Handlers(sup, plan, plan_topology(), Access(None, "all"), clock=lambda: 1.0)

    body = handlers.handle(Request("POST", ("workloads", "chat", "stop"), uid=0))
    assert [w["name"] for w in body["workloads"]] == ["chat.0", "chat.1", "chat.2"]
    assert all(rt.procs[f"chat.{i}"].signals == [15] for i in range(3))
    assert "embed" not in [w["name"] for w in body["workloads"]]
    one = handlers.handle(Request("POST", ("workloads", "chat.1", "start"), uid=0))
    assert one["workload"]["name"] == "chat.1"
    with pytest.raises(ApiError, match=r"runs as replicas: name one of chat.0, chat.1, chat.2"):
        handlers.handle(Request("GET", ("workloads", "chat"), uid=0))


def plan_topology():  # type: ignore[no-untyped-def]
    return load_topology(TOPOLOGIES / "smt16-1gpu.json")


def test_top_keeps_replicas_together_under_their_workload_busiest_first() -> None:
    def row(name: str, cpu: float) -> dict[str, object]:
        return {"name": name, "class": "batch", "state": "ready", "cpus": "1", "cpu_percent": cpu}

    rows = [row("chat.0", 50), row("embed", 70), row("chat.1", 30), row("idx", 1)]
    lines = top_screen(rows, 0.0, 200).splitlines()[3:]
    assert [line.split()[0] for line in lines] == ["chat", "chat.0", "chat.1", "embed", "idx"]


def test_restarting_a_replicated_workload_rolls_one_replica_at_a_time() -> None:
    profile = parse_profile(CHAT)
    plan = make_plan(profile, plan_topology())
    rt = FakeRuntime()
    log = EventLog()
    sup = Supervisor(profile, plan, rt, log, lambda: 0.0)
    rt.ready_now |= {"chat.0", "chat.1", "chat.2"}
    sup.tick(0.0)
    pids = {n: sup.records[n].pid for n in ("chat.0", "chat.1", "chat.2")}
    handlers = Handlers(sup, plan, plan_topology(), Access(None, "all"), clock=lambda: 1.0)

    body = handlers.handle(Request("POST", ("workloads", "chat", "restart"), uid=0))
    assert [w["name"] for w in body["workloads"]] == ["chat.0", "chat.1", "chat.2"]

    def down() -> list[str]:
        return [n for n in pids if sup.records[n].state.value != "ready"]

    assert down() == ["chat.0"]  # only the first is stopping
    seen = []
    for t in range(2, 40):
        for name in down():
            if rt.procs[name].signals and rt.procs[name].ended is None:
                rt.exit(name, sig=15)
        sup.tick(float(t))
        seen.append(down())
        if not sup.rolling and not down():
            break
    assert all(len(d) <= 1 for d in seen)  # never two replicas down at once
    assert all(sup.records[n].pid != pids[n] for n in pids)  # each restarted once
    assert [e.workload for e in log.since(0) if e.new == "stopping"] == [
        "chat.0",
        "chat.1",
        "chat.2",
    ]
