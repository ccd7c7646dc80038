"""nxrd kubernetes, the node agent: the kubelet's pod list read, each pod's cgroup found
for both cgroup drivers, and the ladder acting on lower-class pods' own cgroups only,
starting from and returning to the values the kubelet gave them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from nxrd.agent.agent_api import AgentHandlers
from nxrd.agent.node_agent import NodeAgent
from nxrd.agent.node_spec import Found, node_spec
from nxrd.agent.pods import Pod, PodListError, container_cgroup, parse_pods, pod_cgroup
from nxrd.api.metrics import controller_families, families
from nxrd.api.protocol import ApiError, Request
from nxrd.cli.format import explain_text, status_table, top_screen
from nxrd.controller.law import ladder
from nxrd.controller.poll import Fetched
from nxrd.daemon.command import cli as nxrd_cli
from nxrd.kernel.cgroupfs import FakeCgroupFS
from nxrd.profile.model import ControllerSettings
from nxrd.supervisor.events import EventLog

FIXTURE = Path(__file__).parents[1] / "fixtures" / "kubelet-pods.json"
CHAT, EMBED, INDEXER = (f"models/{n}-7d9f8c6b5-x2x4q" for n in ("chat", "embed", "indexer"))
COREDNS = "kube-system/coredns-7d9f8c6b5-x2x4q"


def pod_list() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_the_fixture_is_a_pod_list_of_kubernetes_1_30() -> None:
    assert kubernetes_validate.validate(pod_list(), "1.30.0", strict=True)


def test_running_pods_with_containers_are_read_and_pending_ones_left_out() -> None:
    pods = {p.key: p for p in parse_pods(pod_list(), "node-1")}
    assert set(pods) == {CHAT, EMBED, INDEXER, COREDNS}  # "warming" is still pending
    chat = pods[CHAT]
    assert (chat.qos, chat.nxr_class, chat.ip) == ("Guaranteed", "latency-critical", "127.0.0.1")
    assert chat.containers[0].runtime == "containerd" and chat.containers[0].id == "a1" * 32
    assert pods[COREDNS].nxr_class is None
    assert parse_pods(pod_list(), "node-2") == []


@pytest.mark.parametrize(
    ("driver", "qos", "pod_path", "container_path"),
    [
        (
            "systemd",
            "Guaranteed",
            "kubepods.slice/kubepods-pod0c9e2d41_5b7f_4a3e_8c21_9d4b6a1f2e33.slice",
            "cri-containerd-{id}.scope",
        ),
        (
            "systemd",
            "Burstable",
            "kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod0c9e2d41_5b7f_4a3e_8c21_9d4b6a1f2e33.slice",
            "cri-containerd-{id}.scope",
        ),
        (
            "systemd",
            "BestEffort",
            "kubepods.slice/kubepods-besteffort.slice/"
            "kubepods-besteffort-pod0c9e2d41_5b7f_4a3e_8c21_9d4b6a1f2e33.slice",
            "cri-containerd-{id}.scope",
        ),
        ("cgroupfs", "Guaranteed", "kubepods/pod0c9e2d41-5b7f-4a3e-8c21-9d4b6a1f2e33", "{id}"),
        (
            "cgroupfs",
            "Burstable",
            "kubepods/burstable/pod0c9e2d41-5b7f-4a3e-8c21-9d4b6a1f2e33",
            "{id}",
        ),
    ],
)
def test_each_pod_is_found_where_the_kubelet_puts_it(
    driver: Any, qos: str, pod_path: str, container_path: str
) -> None:
    (embed,) = [p for p in parse_pods(pod_list()) if p.key == EMBED]
    pod = Pod(embed.namespace, embed.name, embed.uid, qos, None, {}, embed.containers)
    assert pod_cgroup(pod, driver) == pod_path
    cid = embed.containers[0].id
    assert container_cgroup(pod, embed.containers[0], driver) == (
        f"{pod_path}/{container_path.format(id=cid)}"
    )


def test_the_kubelets_own_values_come_from_the_pod_spec() -> None:
    pods = {p.key: p for p in parse_pods(pod_list())}
    # requests 1 CPU -> cpu.shares 1024 -> cpu.weight 39, as the kubelet and runc convert
    assert (pods[CHAT].kubelet_weight, pods[CHAT].kubelet_cpu_max) == (39, 1.0)
    assert (pods[EMBED].kubelet_weight, pods[EMBED].kubelet_cpu_max) == (4, 1.0)
    assert (pods[INDEXER].kubelet_weight, pods[INDEXER].kubelet_cpu_max) == (1, None)


def test_an_unreadable_pod_list_is_one_clear_error() -> None:
    with pytest.raises(PodListError, match="not a PodList"):
        parse_pods({"kind": "Status"})
    broken = pod_list()
    broken["items"][1]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    with pytest.raises(PodListError, match="'lots' is not a CPU quantity"):
        parse_pods(broken)


def found() -> dict[str, Found]:
    return {
        CHAT: Found((1,), 39, 1.0),
        EMBED: Found((0, 2, 3), 4, 1.0),
        INDEXER: Found((0, 2, 3), 1, None),
    }


def test_the_ladder_over_pods_weights_caps_and_freezes_but_never_moves_cores() -> None:
    data = pod_list()
    data["items"][0]["status"]["podIP"] = "10.244.1.7"
    view = node_spec(parse_pods(data), found(), ControllerSettings())
    assert [t.name for t in view.spec.targets] == [CHAT]
    assert [(w.name, w.workload_class) for w in view.spec.lowers] == [
        (EMBED, "batch"),
        (INDEXER, "background"),
    ]
    rungs = ladder(view.spec)
    assert rungs[0].startswith("cap-") and "freeze-batch" in rungs
    assert not [r for r in rungs if r.startswith(("core-", "stop-"))]  # the kubelet's to do
    # the exported profile's 127.0.0.1 is the pod itself: the agent scrapes its address
    source = view.slos[CHAT].source.prometheus
    assert source is not None and source.url == "http://10.244.1.7:18080/metrics"
    assert view.problems == []


def test_a_pod_with_unusable_annotations_is_named_and_left_alone() -> None:
    data = pod_list()
    data["items"][1]["metadata"]["annotations"]["nxr.io/control"] = "{not json"
    data["items"][2]["metadata"]["annotations"]["nxr.io/class"] = "bulk"
    view = node_spec(parse_pods(data), found(), ControllerSettings())
    assert view.spec.lowers == ()
    assert view.problems == [
        f"pod {EMBED}: its nxr.io/ annotations are unreadable: pod {EMBED}: nxr.io/control "
        "is not JSON",
        f"pod {INDEXER}: nxr.io/class 'bulk' is not an nxr class",
    ]


def kubelet_tree(fs: FakeCgroupFS, pods: list[Pod]) -> None:
    """The pods' cgroups as the kubelet made them (systemd driver)."""
    fs.write("", "cgroup.subtree_control", "+cpu +cpuset +memory")
    cpus = {CHAT: "1", EMBED: "0,2-3", INDEXER: "0,2-3", COREDNS: "0,2-3"}
    for pod in pods:
        path = pod_cgroup(pod, "systemd")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if not fs.exists(rel):
                fs.mkdir(rel)
                fs.write(rel, "cgroup.subtree_control", "+cpu +cpuset +memory")
        fs.dirs[path]["cpuset.cpus.effective"] = cpus[pod.key]
        fs.dirs[path]["cpu.weight"] = str(pod.kubelet_weight)
        limit = pod.kubelet_cpu_max
        fs.dirs[path]["cpu.max"] = "max 100000" if limit is None else f"{int(limit * 1e5)} 100000"
    fs.writes.clear()


def histogram(requests: int, slow: bool) -> str:
    """request_latency_seconds with `requests` in all, each 0.5 s when slow, else 0.05 s."""
    fast_count = 0 if slow else requests
    return (
        "# TYPE request_latency_seconds histogram\n"
        f'request_latency_seconds_bucket{{le="0.1"}} {fast_count}\n'
        f'request_latency_seconds_bucket{{le="1.0"}} {requests}\n'
        f'request_latency_seconds_bucket{{le="+Inf"}} {requests}\n'
        f"request_latency_seconds_count {requests}\n"
        f"request_latency_seconds_sum {requests * (0.5 if slow else 0.05)}\n"
    )


def run(agent: NodeAgent, start: float, seconds: float, slow: bool, served: list[int]) -> float:
    """Ticks every 0.5 s for seconds, the chat pod's scrape fed in before each."""
    now = start
    while now < start + seconds:
        served[0] += 50
        agent.fetched.put(Fetched(CHAT, now, 0.001, histogram(served[0], slow)))
        agent.tick(now)
        now += 0.5
    return now


def test_the_agent_squeezes_lower_pods_while_the_slo_is_missed_and_gives_back_the_kubelets_values() -> (
    None
):
    fs = FakeCgroupFS()
    data = pod_list()
    pods = parse_pods(data)
    kubelet_tree(fs, pods)
    events = EventLog()
    settings = ControllerSettings(cooldown=1.0, relax_after=2.0)
    agent = NodeAgent(fs, lambda: copy.deepcopy(data), "systemd", events, lambda: 0.0, settings)
    served = [0]
    try:
        now = run(agent, 0.0, 30.0, slow=True, served=served)
        embed, indexer = (pod_cgroup(p, "systemd") for p in pods if p.key in (EMBED, INDEXER))
        # top of the ladder: batch capped to a quarter of its 3 CPUs (under its own limit of
        # 1 CPU) and frozen, background held at its floor and frozen
        assert fs.read(embed, "cpu.max") == "75000 100000"
        assert fs.read(embed, "cgroup.freeze") == "1"
        assert fs.read(indexer, "cpu.max") == "10000 100000"
        assert fs.read(indexer, "cgroup.freeze") == "1"
        written = {(rel, f) for rel, f, _ in fs.writes}
        assert {f for _, f in written} <= {"cpu.max", "cpu.weight", "cgroup.freeze"}
        assert {rel for rel, _ in written} == {embed, indexer}  # never chat's, never coredns'
        climbs = [e.new for e in events.since(0) if e.workload == "controller"]
        assert climbs[:3] == ["cap-75%", "cap-50%", "cap-25%"]
        assert climbs[-2:] == ["freeze-background", "freeze-batch"]
        last = [e for e in events.since(0) if e.workload == "controller"][-1]
        assert last.data["observed"][CHAT] > last.data["slo"][CHAT] == 0.2  # its inputs
        run(agent, now, 60.0, slow=False, served=served)
        assert fs.read(embed, "cgroup.freeze") == "0"
        assert fs.read(embed, "cpu.max") == "100000 100000"  # the kubelet's: its limit
    finally:
        agent.close()
    assert fs.read(indexer, "cpu.max") == "max 100000"
    assert fs.read(indexer, "cpu.weight") == "1"


def test_a_freeze_left_by_an_agent_that_crashed_is_lifted_by_the_next() -> None:
    fs = FakeCgroupFS()
    data = pod_list()
    pods = parse_pods(data)
    kubelet_tree(fs, pods)
    (embed,) = [pod_cgroup(p, "systemd") for p in pods if p.key == EMBED]
    fs.write(embed, "cgroup.freeze", "1")
    fs.write(embed, "cpu.max", "25000 100000")
    agent = NodeAgent(fs, lambda: data, "systemd", EventLog(), lambda: 0.0, ControllerSettings())
    try:
        agent.tick(0.0)
        assert fs.read(embed, "cgroup.freeze") == "0"
        # from the pod's spec, not from what the cgroup held: the crashed agent's cap
        assert fs.read(embed, "cpu.max") == "100000 100000"
    finally:
        agent.close()


def test_a_kubelet_that_does_not_answer_is_said_once_and_the_agent_keeps_going() -> None:
    events = EventLog()

    def refuse() -> object:
        raise OSError("connection refused")

    agent = NodeAgent(
        FakeCgroupFS(), refuse, "systemd", events, lambda: 0.0, ControllerSettings(), refresh=1
    )
    for now in range(5):
        agent.tick(float(now))
    said = [e.cause for e in events.since(0)]
    assert said == ["cannot read the kubelet's pods: connection refused"]


def test_the_shipped_daemonset_is_valid_and_runs_the_agent_with_options_it_has() -> None:
    manifest = Path(__file__).parents[2] / "packaging" / "kubernetes" / "nxr-node-agent.yaml"
    documents = list(yaml.safe_load_all(manifest.read_text()))
    for doc in documents:
        assert kubernetes_validate.validate(doc, "1.30.0", strict=True)
    (ds,) = [d for d in documents if d["kind"] == "DaemonSet"]
    argv = ds["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[:2] == ["nxrd", "kubernetes"]
    command = nxrd_cli.commands["kubernetes"]
    ctx = command.make_context("kubernetes", list(argv[2:]))  # raises on an unknown option
    assert ctx.params["cgroup_driver"] == "systemd"
    assert ctx.params["cgroup_mount"] == "/host/sys/fs/cgroup"


def test_nxrctl_status_and_events_read_the_agent_with_pods_by_namespace_and_name() -> None:
    fs = FakeCgroupFS()
    data = pod_list()
    kubelet_tree(fs, parse_pods(data))
    agent = NodeAgent(
        fs, lambda: data, "systemd", EventLog(), lambda: 0.0, ControllerSettings(cooldown=1.0)
    )
    handlers = AgentHandlers(agent)
    try:
        run(agent, 0.0, 12.0, slow=True, served=[0])
        body = handlers.handle(Request("GET", ("workloads",)))
        by_name = {w["name"]: w for w in body["workloads"]}
        assert set(by_name) == {CHAT, EMBED, INDEXER}  # coredns is not nxr's
        assert by_name[CHAT]["latency_seconds"] > by_name[CHAT]["slo_seconds"] == 0.2
        assert by_name[CHAT]["cpus"] == "1"
        assert by_name[EMBED]["frozen"] and by_name[EMBED]["frozen_by"] == "controller"
        table = status_table(body["workloads"])  # what nxrctl status prints
        assert CHAT in table and "frozen" in table
        assert EMBED in top_screen(body["workloads"], 12.0, 160)  # and nxrctl top
        # the metrics endpoint (nxrd kubernetes --metrics) builds nxrd's own series from them
        fs.dirs[pod_cgroup(parse_pods(data)[1], "systemd")]["cpu.stat"] = "usage_usec 2500000"
        series = {
            (s.name, s.labels.get("workload"), s.labels.get("direction")): s.value
            for m in [*families(agent.status()), *controller_families(agent.summary())]
            for s in m.samples
        }
        assert series[("nxr_workload_latency_seconds", CHAT, None)] > 0.2
        assert series[("nxr_workload_frozen", EMBED, None)] == 1.0
        assert series[("nxr_workload_cpu_usage_seconds_total", EMBED, None)] == 2.5
        assert series[("nxr_controller_level", None, None)] == agent.state.level > 0
        assert series[("nxr_controller_actions_total", None, "up")] >= 1
        events = handlers.handle(Request("GET", ("events",), {"since": "0"}))
        assert [e["new"] for e in events["events"] if e["workload"] == "controller"][:1] == [
            "cap-75%"
        ]
        later = handlers.handle(Request("GET", ("events",), {"since": str(events["last"])}))
        assert later["events"] == []
        with pytest.raises(ApiError, match="the node agent answers status, top, events"):
            handlers.handle(Request("POST", ("workloads", CHAT, "stop")))
        # nxrctl explain models/embed-...: the slash in its name splits the path
        x = handlers.handle(Request("GET", ("workloads", *EMBED.split("/"), "explain")))
        rows = {r["resource"]: r for r in x["resources"]}
        assert rows["cpu.max"]["planned"] == "100000 100000"  # the kubelet's, from its limit
        assert rows["cpu.max"]["kernel"] == rows["cpu.max"]["written"] == "75000 100000"
        assert rows["cpu.max"]["by"].startswith("controller: cap-25% (models/chat-")
        assert rows["cgroup.freeze"]["by"].startswith("controller: freeze-batch")
        assert rows["cgroup.freeze"]["kernel"] == "1"
        assert rows["cpuset.cpus"]["written"] is None  # the CPU manager's, never nxr's
        text = explain_text(x)
        assert "pod spec: limits.cpu 1000m" in text and "gpus:" not in text
        with pytest.raises(ApiError, match="no nxr pod models/nope on this node"):
            handlers.handle(Request("GET", ("workloads", "models", "nope", "explain")))
    finally:
        agent.close()
