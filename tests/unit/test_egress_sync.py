"""nxrd keeps egress shaping in step with the plan and its workloads (fake kernel): rules for
running workloads only, loaded again when a leaf may be new, drift put back with an event,
adopted as found after an nxrd crash, gone on shutdown, and refused before anything is
applied when the host cannot shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.daemon.core import Daemon
from nxrd.errors import NxrError
from nxrd.kernel.fake_host import FakeHost, FakeShaper
from nxrd.model.topology import load_topology
from tests.unit.conftest import TOPOLOGIES, start_daemon

PROFILE = """
[host.net]
interfaces = ["eth0"]

[workloads.embed]
command = ["embed"]
class = "batch"
net = { egress = "200Mbit", guarantee = "50Mbit" }

[workloads.index]
command = ["index"]
class = "background"
net = { egress = "100Mbit" }

[workloads.other]
command = ["other"]
"""


def host() -> FakeHost:
    topo = load_topology(TOPOLOGIES / "vm-2cpu.json")
    return FakeHost(topo.model_copy(update={"interfaces": {"eth0": 1_000_000_000, "lo": None}}))


def daemon(tmp_path: Path, h: FakeHost, text: str = PROFILE) -> Daemon:
    d = start_daemon(tmp_path, h, text)
    d.step(1.0, stopping=False)
    return d


def shaper(h: FakeHost) -> FakeShaper:
    assert h.fake_shaper is not None
    return h.fake_shaper


def test_running_workloads_are_marked_and_the_tree_is_built_once(tmp_path: Path) -> None:
    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    try:
        assert s.builds == 1 and set(s.built) == {"eth0"}
        classes = {c.workload: c for c in d.plan.egress.classes}  # type: ignore[union-attr]
        embed = s.built["eth0"][classes["embed"].minor]
        assert (embed.rate, embed.ceil) == (50_000_000, 200_000_000)
        assert s.rules == {
            "embed": (d.egress.leaf("embed"), classes["embed"].mark),
            "index": (d.egress.leaf("index"), classes["index"].mark),
        }
        assert d.egress.leaf("embed").endswith("batch/embed")

        # a stopped workload has no leaf: no rule; started again, its rule is loaded again
        loads = s.loads
        d.sup.stop("index", 2.0)
        h.proc_runtime.exit("index", sig=15)  # type: ignore[union-attr]
        d.step(3.0, stopping=False)  # stopped: its leaf goes
        d.step(3.5, stopping=False)
        assert set(s.rules or {}) == {"embed"} and s.loads > loads
        d.sup.start("index", 4.0)
        d.step(4.0, stopping=False)
        d.step(4.5, stopping=False)
        assert set(s.rules or {}) == {"embed", "index"}
        assert s.builds == 1  # the tree is the plan's, not the leaves'
    finally:
        d.close()
    assert s.rules is None and s.built == {}  # nxrd's shutdown takes it all off


def test_drift_is_put_back_with_an_event(tmp_path: Path) -> None:
    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    try:
        d.step(2.0, stopping=False)  # the rules loaded again once the workloads started
        s.rules = {}  # someone flushed nxr's table
        d.step(10.0, stopping=False)
        assert set(s.rules) == {"embed", "index"}
        said = [e.cause for e in d.events.since(0, "nxrd") if "drifted" in e.cause]
        assert said == [
            "egress shaping drifted (the nftables rules are not as planned): put back as planned"
        ]
    finally:
        d.close()


def test_after_a_crash_the_next_nxrd_adopts_the_shaping_as_found(tmp_path: Path) -> None:
    h = host()
    first = daemon(tmp_path, h)
    s = shaper(h)
    builds, loads = s.builds, s.loads
    first.close(leave=True)  # as a crash: workloads and shaping stay
    assert s.rules is not None
    second = daemon(tmp_path, h)
    try:
        assert (s.builds, s.loads) == (builds, loads)  # neither built nor loaded again
    finally:
        second.close()


def test_a_host_that_cannot_shape_is_refused_before_anything_is_applied(
    tmp_path: Path,
) -> None:
    h = host()
    h.shaper()
    shaper(h).missing = "no nft command: install Debian's nftables package"
    (tmp_path / "p.toml").write_text(PROFILE)
    with pytest.raises(NxrError) as e:
        Daemon([str(tmp_path / "p.toml")], str(tmp_path / "state"), host=h)
    assert str(e.value).endswith("host.net: no nft command: install Debian's nftables package")
    assert shaper(h).builds == 0 and h.proc_runtime is None


def test_what_each_workload_sends_is_in_status_show_and_metrics(tmp_path: Path) -> None:
    from dataclasses import replace

    from prometheus_client import CollectorRegistry, generate_latest

    from nxrd.api.metrics import WorkloadCollector
    from nxrd.cli.format import show_text

    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    try:
        minor = next(c.minor for c in d.plan.egress.classes if c.workload == "embed")  # type: ignore[union-attr]
        tree = s.built["eth0"]
        d.egress.sample(10.0)
        tree[minor] = replace(tree[minor], sent=25_000_000, dropped=3)  # 25 MB in 2 s
        d.egress.sample(12.0)
        status = {w["name"]: w for w in d.view.status_docs()}
        assert status["embed"]["net"] == {
            "egress_bits": 200_000_000,
            "guarantee_bits": 50_000_000,
            "sent_bytes": 25_000_000,
            "dropped_packets": 3,
            "tx_bytes_per_s": 12_500_000,
        }
        assert "net" not in status["other"]
        from nxrd.cli.format import status_table

        lines = status_table(list(status.values())).splitlines()
        at = lines[0].index("NET")
        cells = {ln.split()[0]: ln[at:].split()[0] for ln in lines[1:]}
        assert cells == {
            "embed": "100Mbit/200Mbit",
            "index": "0bit/100Mbit",  # nothing sent through its class between the samples
            "other": "-",
        }
        assert "NET" not in status_table([{**w, "net": None} for w in status.values()])
        assert (
            "  net: egress 200Mbit, guarantee 50Mbit, sending 100Mbit, 3 packets dropped"
            in show_text(status["embed"] | {"command": ["embed"], "cgroup": "batch/embed"})
        )
        reg = CollectorRegistry()
        reg.register(WorkloadCollector(lambda: list(status.values()), dict))
        text = generate_latest(reg).decode()
        assert 'nxr_workload_net_sent_bytes_total{workload="embed"} 2.5e+07' in text
        assert 'nxr_workload_net_egress_bits_per_second{workload="index"} 1e+08' in text
    finally:
        d.close()


def test_the_controllers_cut_waits_for_a_full_link_and_changes_classes_in_place(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from nxrd.model.egress import PARENT

    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    try:
        minor = next(c.minor for c in d.plan.egress.classes if c.workload == "embed")  # type: ignore[union-attr]
        tree = s.built["eth0"]

        def link_sends(bits_per_s: int, at: float) -> None:
            tree[PARENT] = replace(tree[PARENT], sent=tree[PARENT].sent + bits_per_s // 8)
            d.egress.sample(at)

        link_sends(0, 10.0)
        link_sends(300_000_000, 11.0)  # 30% of the link: room to spare
        d.egress.limit({"embed": 100_000_000, "index": 100_000_000})
        d.step(11.0, stopping=False)
        assert s.retunes == 0 and tree[minor].ceil == 200_000_000  # nothing to gain

        link_sends(950_000_000, 12.0)  # full
        d.egress.limit({"embed": 100_000_000, "index": 500_000_000})  # index: not above plan
        d.step(12.0, stopping=False)
        assert (s.builds, s.retunes) == (1, 1)  # changed in place, not built again
        assert tree[minor].ceil == 100_000_000
        wanted = {c.workload: c.ceil for c in d.egress.wanted().classes}  # type: ignore[union-attr]
        assert wanted == {"embed": 100_000_000, "index": 100_000_000}
        d.egress.sample(13.0)
        status = {w["name"]: w for w in d.view.status_docs()}
        assert status["embed"]["net"]["egress_bits"] == 100_000_000

        link_sends(400_000_000, 14.0)  # the cut emptied the link: it holds all the same
        d.egress.limit({"embed": 100_000_000, "index": 100_000_000})
        d.step(20.0, stopping=False)  # and the drift check reads it as wanted
        assert tree[minor].ceil == 100_000_000
        assert not [e for e in d.events.since(0, "nxrd") if "drifted" in e.cause]
        d.egress.limit({"embed": 200_000_000, "index": 100_000_000})  # given back
        d.step(21.0, stopping=False)
        assert tree[minor].ceil == 200_000_000 and s.retunes == 2
    finally:
        d.close()


def test_an_apply_that_changes_a_ceiling_retunes_and_one_that_adds_a_workload_rebuilds(
    tmp_path: Path,
) -> None:
    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    try:
        faster = PROFILE.replace('egress = "100Mbit"', 'egress = "300Mbit"')
        d.reconf.reconfigure([("p.toml", faster)], False, "t")
        d.step(2.0, stopping=False)
        assert (s.builds, s.retunes) == (1, 1)
        minor = next(c.minor for c in d.plan.egress.classes if c.workload == "index")  # type: ignore[union-attr]
        assert s.built["eth0"][minor].ceil == 300_000_000
        more = faster + '\n[workloads.sync]\ncommand = ["sync"]\nnet = { egress = "10Mbit" }\n'
        d.reconf.reconfigure([("p.toml", more)], False, "t")
        d.step(3.0, stopping=False)
        assert s.builds == 2 and set(s.rules or {}) == {"embed", "index", "sync"}
    finally:
        d.close()


def test_shaping_the_kernel_refuses_is_said_once_and_tried_again_after_a_pause(
    tmp_path: Path,
) -> None:
    from nxrd.errors import KernelError

    h = host()
    d = daemon(tmp_path, h)
    s = shaper(h)
    tries = []

    def refuse(egress: object) -> None:
        tries.append(1)
        raise KernelError("tc on eth0: Operation not supported")

    try:
        s.build = refuse  # type: ignore[method-assign,assignment]
        s.built.clear()  # the tree is gone: built again at the next drift check
        for t in (10.0, 10.1, 10.2, 12.0, 16.0):
            d.step(t, stopping=False)
        warned = [
            e.cause for e in d.events.since(0, "nxrd") if "Operation not supported" in e.cause
        ]
        assert warned == ["warning: egress shaping: tc on eth0: Operation not supported"]
        assert len(tries) == 2  # at 10.0, then 5 s later: not on every pass
    finally:
        d.close()
