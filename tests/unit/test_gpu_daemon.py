"""nxrd's GPU loop on a fake NVML: a failing GPU is quarantined, said once, and the
workloads placed on it by count move to a healthy GPU (one named by the profile stays); a
workload over its gpu_memory is told about, then restarted or stopped by its policy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.api.handlers import Handlers
from nxrd.api.protocol import Request
from nxrd.cli.format import explain_text
from nxrd.daemon.core import Daemon
from nxrd.kernel.fake_host import FakeHost
from nxrd.model.topology import Topology, load_topology
from tests.unit.conftest import TOPOLOGIES
from tests.unit.fake_nvml import FakeGpu, FakeNVML

PROFILE = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 2
gpus = 1

[workloads.pinned]
command = ["serve"]
gpus = [1]
"""


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    global STATE
    STATE = tmp_path
    monkeypatch.chdir(tmp_path)  # the profile is p.toml, as messages name it


STATE = Path()


def daemon(nvml: FakeNVML, profile: str = PROFILE, topology: Topology | None = None) -> Daemon:
    """nxrd built on a fake host (a fake NVML, cgroupfs and processes), started."""
    host = FakeHost(topology or load_topology(TOPOLOGIES / "2socket-8gpu.json"), nvml=nvml)
    path = STATE / "p.toml"
    path.write_text(profile)
    d = Daemon(["p.toml"], str(STATE / "state"), socket_path=str(STATE / "nxrd.sock"), host=host)
    d.start()
    d.sup.tick(0.0)
    return d


def fake_host() -> FakeNVML:
    topo = load_topology(TOPOLOGIES / "2socket-8gpu.json")
    return FakeNVML(
        [FakeGpu(g.uuid, g.pci_bus_id, minor=g.index, ecc_uncorrected=0) for g in topo.gpus]
    )


def poll(d: Daemon, now: float = 0.0) -> None:
    """The loop's GPU pass: NVML's PIDs attributed through the host, health, budgets."""
    assert d.gpus is not None
    d.gpus.poll(d, now)


@contextlib.contextmanager
def hung(nvml: FakeNVML, call: str) -> Iterator[None]:
    """The driver blocks in call (see FakeNVML.hang) until the block ends."""
    nvml.hang.add(call)
    try:
        yield
    finally:
        nvml.hang.clear()
        nvml.release.set()


def said(d: Daemon) -> list[tuple[str, str]]:
    # (isolation's line at start is tests/unit/test_isolation.py's)
    return [
        (e.new, e.cause)
        for e in d.events.since(0, "nxrd")
        if not e.cause.startswith("exclusive cores")
    ]


def test_a_critical_xid_moves_the_workloads_placed_by_count_and_is_said_once() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    assert [g.index for g in d.plan.workload("chat").gpus] == [0]
    # explain names the device file the leaf's filter lets it open
    api = Handlers(d.sup, d.plan, d.topology, d.access, d.view)
    doc = api.handle(Request("GET", ("workloads", "chat", "explain")))
    assert doc["gpus"]["devices"] == ["/dev/nvidia0"]
    assert "device filter allows /dev/nvidia0" in explain_text(doc)
    poll(d)
    assert said(d) == []  # healthy: nothing happens
    nvml.gpus[0].xids.append(79)  # GPU 0 fell off the bus
    nvml.gpus[1].xids.append(13)  # an application's fault on GPU 1: not the GPU's
    poll(d)
    assert said(d) == [
        (
            "quarantined",
            "GPU 0 (GPU-00000000-aaaa-bbbb-cccc-000000000000): Xid 79",
        ),
        ("-", "moved to healthy GPUs: chat"),
    ]
    assert [g.index for g in d.plan.workload("chat").gpus] == [2]  # 1 is pinned's
    env = d.plan.workload("chat").env
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-00000002-aaaa-bbbb-cccc-000000000002"
    restarts = [e.cause for e in d.events.since(0, "chat") if "profile" in e.cause]
    assert restarts == ["profile changed (GPU quarantine)"]
    poll(d)
    assert len(said(d)) == 2  # quarantine is said once
    # status, the API and the metrics say which GPU is out, until nxrd restarts
    assert [(g["index"], g["quarantined"]) for g in d.gpus.docs()[:3]] == [
        (0, "Xid 79"),
        (1, None),
        (2, None),
    ]


COUNTED = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
gpus = 1

[workloads.embed]
command = ["embed"]
class = "batch"
gpus = 1
"""


def gpus_of(d: Daemon) -> dict[str, list[int]]:
    return {w.name: [g.index for g in w.gpus] for w in d.plan.workloads}


def test_quarantine_moves_only_the_workloads_on_the_bad_gpu() -> None:
    nvml = fake_host()
    d = daemon(nvml, COUNTED)
    assert gpus_of(d) == {"chat": [0], "embed": [1]}
    poll(d)
    nvml.gpus[0].xids.append(79)
    poll(d)
    # chat ranks first, but GPU 1 stays embed's: a healthy server is not restarted
    assert gpus_of(d) == {"chat": [2], "embed": [1]}
    assert said(d)[-1] == ("-", "moved to healthy GPUs: chat")
    restarts = [e.workload for e in d.events.since(0) if "GPU quarantine" in e.cause]
    assert restarts == ["chat"]


def test_an_applied_profile_leaves_running_workloads_on_their_gpus() -> None:
    d = daemon(fake_host(), COUNTED)
    d.configured = []
    # a new latency-critical workload ranks before both and would take GPU 0 afresh
    added = COUNTED + '\n[workloads.rerank]\ncommand = ["r"]\nclass = "latency-critical"\n'
    added += "cpus = 1\npriority = 10\ngpus = 1\n"
    doc = d.reconf.reconfigure([("p.toml", added)], dry_run=True, who="test")
    restarts = [(c["workload"], c["what"]) for c in doc["changes"] if c["effect"] == "restart"]
    assert restarts == []  # chat and embed keep their GPUs (embed's shared cores shrink, live)
    assert [c["what"] for c in doc["changes"] if c["workload"] == "rerank"] == ["added"]


def test_a_workload_on_a_mig_instance_of_a_quarantined_gpu_is_said_to_stay() -> None:
    topo = load_topology(TOPOLOGIES / "2socket-8gpu.json")
    gpus = [g.model_dump() for g in topo.gpus]
    gpus[4].update(mig=True, mig_instances=[{"index": 0, "uuid": "MIG-x"}])
    nvml = fake_host()
    d = daemon(
        nvml,
        '[workloads.small]\ncommand = ["x"]\ngpus = ["MIG-x"]\n',
        topo.model_validate({**topo.model_dump(), "gpus": gpus}),
    )
    poll(d)
    nvml.gpus[4].xids.append(79)
    poll(d)
    assert said(d)[-1] == ("-", "left on quarantined GPUs (the profile names them): small")


def test_a_lost_gpu_is_quarantined_on_the_second_poll_and_a_named_workload_stays() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    poll(d)
    nvml.gpus[1].lost = True  # pinned's GPU, named in the profile
    poll(d)
    assert said(d) == []  # one miss is forgiven
    poll(d)
    assert said(d) == [
        (
            "quarantined",
            "GPU 1 (GPU-00000001-aaaa-bbbb-cccc-000000000001): not answering "
            "(NVML: GPU is lost, 2 polls in a row)",
        ),
        ("-", "left on quarantined GPUs (the profile names them): pinned"),
    ]
    assert [g.index for g in d.plan.workload("pinned").gpus] == [1]
    assert [g.index for g in d.plan.workload("chat").gpus] == [0]  # untouched


def test_a_hung_driver_quarantines_every_gpu_and_the_loop_goes_on() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    poll(d)
    with hung(nvml, "nvmlDeviceGetUUID"):  # every query now blocks in the driver
        poll(d)  # gives up after the guard's 0.05 s
        poll(d)  # the call still hangs: refused at once, a second miss
        quarantine = [c for n, c in said(d) if n == "quarantined"]
        assert len(quarantine) == 8
        assert quarantine[0].startswith(
            "GPU 0 (GPU-00000000-aaaa-bbbb-cccc-000000000000): not answering (GPU not answering: "
        )
        assert said(d)[-1] == (
            "-",
            "workloads left on quarantined GPUs: p.toml: workloads.chat.gpus: needs 1 GPU(s); "
            "0 free of 8 (GPUs 1 are taken; GPUs 0-7 are quarantined)",
        )
        assert [g.index for g in d.plan.workload("chat").gpus] == [0]  # the old plan stands


def test_a_gpu_whose_driver_calls_hang_is_quarantined_alone() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    poll(d)
    with hung(nvml, "*:0"):  # every driver call on chat's GPU 0 blocks, its Xid events too
        poll(d)
        nvml.gpus[3].xids.append(48)  # meanwhile GPU 3 reports a double-bit ECC error
        poll(d)
        gpu0, gpu3 = [c for n, c in said(d) if n == "quarantined"]  # both in the second poll
        assert gpu3 == "GPU 3 (GPU-00000003-aaaa-bbbb-cccc-000000000003): Xid 48"
        assert gpu0.startswith(
            "GPU 0 (GPU-00000000-aaaa-bbbb-cccc-000000000000): not answering "
            "(GPU not answering: the query of GPU 0 has not returned for "
        )
        assert d.gpus is not None
        assert [g.index for g in d.plan.workload("chat").gpus] == [2]  # off 0, not onto 3
        assert d.gpus.use is not None
        assert d.gpus.use.workload("pinned", [1], True)["gpu_usage"][0]["error"] is None


def test_an_xid_before_a_gpu_stops_answering_is_the_reason_given() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    poll(d)
    nvml.gpus[0].xids.append(79)
    nvml.gpus[0].lost = True  # it fell off the bus: the Xid, then no answers
    poll(d)
    assert said(d)[0] == ("quarantined", "GPU 0 (GPU-00000000-aaaa-bbbb-cccc-000000000000): Xid 79")


def test_an_xid_read_by_a_query_that_then_hangs_is_still_the_reason_given() -> None:
    nvml = fake_host()
    d = daemon(nvml)
    poll(d)
    nvml.gpus[0].xids.append(79)
    with hung(nvml, "nvmlDeviceGetUUID:0"):  # the driver wedges right after the Xid is read
        poll(d)
        assert said(d)[0] == (
            "quarantined",
            "GPU 0 (GPU-00000000-aaaa-bbbb-cccc-000000000000): Xid 79",
        )


BUDGETED = """
[workloads.llm]
command = ["serve"]
gpus = 1
gpu_memory = "8G"
gpu_memory_policy = "restart"
restart = {max_restarts = 1}
"""


def test_over_gpu_memory_is_said_then_restarted_then_stopped_past_its_restart_limit() -> None:
    nvml = fake_host()
    d = daemon(nvml, BUDGETED)
    events = d.events.since(0, "llm")

    def hold(gib: int) -> None:
        pid = d.sup.records["llm"].pid
        assert pid is not None
        nvml.gpus[0].compute = [(pid, gib << 30)]

    hold(6)
    poll(d, 1.0)
    hold(9)  # over its 8G: said at once, acted on after 3 polls in a row
    for t in (2.0, 3.0, 4.0):
        poll(d, t)
    causes = [e.cause for e in d.events.since(0, "llm")][len(events) :]
    assert causes[0] == "GPU memory 9G on GPU 0, over its 8G (policy restart)"
    assert causes[1] == "restarted: GPU memory 9G on GPU 0, over its 8G"
    llm = d.sup.records["llm"]
    assert llm.state.value == "stopping"
    first = llm.pid
    for t in (4.5, 5.0, 5.5):  # the fake process ends on its stop signal; it starts again
        d.sup.tick(t)
    assert llm.state.value in ("starting", "ready") and llm.pid != first
    hold(9)  # still over after its one allowed restart: stopped, and it stays stopped
    for t in (6.0, 7.0, 8.0):
        poll(d, t)
    assert [e.cause for e in d.events.since(0, "llm")][-2:] == [
        "GPU memory 9G on GPU 0, over its 8G (policy restart)",
        "stopped: GPU memory 9G on GPU 0, over its 8G; already restarted once",
    ]
    for t in (8.5, 9.0):
        d.sup.tick(t)
    assert llm.state.value == "stopped"
    assert d.sup.snapshot()["llm"]["held"]  # a restarted nxrd does not start it again


def test_an_operator_releases_a_quarantined_gpu_and_a_failing_one_goes_back() -> None:
    """Before, only a restart of nxrd lifted a quarantine."""
    from nxrd.api.protocol import ApiError

    nvml = fake_host()
    d = daemon(nvml)
    api = Handlers(d.sup, d.plan, d.topology, d.access, d.view)
    nvml.gpus[3].xids.append(79)
    poll(d)
    assert d.gpus is not None and list(d.gpus.quarantined()) == [nvml.gpus[3].uuid]
    release = Request("POST", ("gpus", "3", "release"), uid=1000)
    try:
        api.handle(release)
    except ApiError as e:
        assert (e.code, str(e)) == (
            "forbidden",
            "uid 1000 may not release GPUs (root or the API group)",
        )
    else:
        raise AssertionError("an unprivileged caller released a GPU")
    body = api.handle(Request("POST", ("gpus", "3", "release"), uid=0))
    assert body == {"gpu": 3, "uuid": nvml.gpus[3].uuid, "was": "Xid 79"}
    assert d.gpus.quarantined() == {}
    assert said(d)[-1] == ("healthy", f"GPU 3 ({nvml.gpus[3].uuid}): released by uid 0")
    for index, message in (("3", "GPU 3 is not quarantined"), ("42", "no GPU 42 on this host")):
        try:
            api.handle(Request("POST", ("gpus", index, "release"), uid=0))
        except ApiError as e:
            assert e.code == "conflict" and str(e).startswith(message)
        else:
            raise AssertionError(f"released GPU {index}")
    poll(d)
    assert d.gpus.quarantined() == {}  # healthy since: stays released
    nvml.gpus[3].xids.append(79)  # fails again: quarantined again at its next poll
    poll(d)
    assert list(d.gpus.quarantined()) == [nvml.gpus[3].uuid]
