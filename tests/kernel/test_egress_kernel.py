"""Egress shaping on a real kernel: a veth pair to a network namespace running `iperf3 -s`;
packets are classified by the cgroup of the socket that sends them, a ceiling holds, an
unshaped neighbour gets the rest, a leaf created again needs its rule again, nxr's tree
comes off cleanly and a root qdisc someone else owns is left alone."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.kernel.shaper import Htb, Nft, Shaper, nft_script
from nxrd.kernel.spawn import spawn_in_cgroup
from nxrd.model.egress import Egress, EgressClass, Interface, minors
from tests.kernel.test_daemon import Nxrd

DEV, PEER, NS = "nxr-veth0", "nxr-veth1", "nxr-peer"
HERE, THERE = "10.77.0.1", "10.77.0.2"
LINK = 1_000_000_000
CEILING = 50_000_000


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def peer() -> Iterator[None]:
    """The veth pair, its far end in a namespace with iperf3 servers on ports 5201-5202."""
    sh("ip", "netns", "add", NS)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "link", "add", DEV, "type", "veth", "peer", "name", PEER, "netns", NS)
        sh("ip", "addr", "add", f"{HERE}/24", "dev", DEV)
        sh("ip", "link", "set", DEV, "up")
        sh("ip", "-n", NS, "addr", "add", f"{THERE}/24", "dev", PEER)
        sh("ip", "-n", NS, "link", "set", PEER, "up")
        for port in ("5201", "5202"):
            servers.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", NS, "iperf3", "-s", "-p", port],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1)
        yield
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=10)
        subprocess.run(["ip", "link", "del", DEV], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def egress() -> Egress:
    minor = minors(["shaped"])["shaped"]
    return Egress(
        interfaces=[Interface(name=DEV, link=LINK)],
        classes=[
            EgressClass(workload="shaped", minor=minor, rate=1_000_000, ceil=CEILING, priority=2)
        ],
    )


def iperf(leaf: Path, port: str, seconds: int = 6) -> subprocess.Popen[bytes]:
    argv = ["iperf3", "-c", THERE, "-p", port, "-t", str(seconds), "-J"]
    return spawn_in_cgroup(argv, leaf, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def received_rate(proc: subprocess.Popen[bytes]) -> float:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # what arrived: the sender's count includes what still sat in its socket buffer
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def test_a_workloads_sockets_are_shaped_by_their_cgroup(peer: None, scratch: Path) -> None:
    shaped, other = scratch / "shaped", scratch / "other"
    shaped.mkdir()
    other.mkdir()
    rel = str(shaped.relative_to("/sys/fs/cgroup"))
    e = egress()
    nft, htb = Nft(), Htb()
    try:
        # the kernel can: nftables' socket cgroupv2 match (checked, not loaded), no foreign
        # root qdisc
        assert Shaper().problem(e) is None
        assert htb.foreign(DEV) is None
        htb.build(DEV, LINK, e)
        nft.load(nft_script(e, {"shaped": rel}))
        [marked] = nft.rules() or []
        assert (marked.workload, marked.leaf, marked.mark) == ("shaped", rel, e.classes[0].mark)

        # both at once: the shaped one at its ceiling, the other well past it
        a, b = iperf(shaped, "5201"), iperf(other, "5202")
        capped, free = received_rate(a), received_rate(b)
        assert abs(capped - CEILING) <= 0.05 * CEILING, capped
        assert free > 2 * CEILING, free
        # classified by cgroup: the shaped class carried the shaped client's bytes
        sent = htb.classes(DEV)
        assert sent[e.classes[0].minor].sent >= 0.9 * capped * 6 / 8, sent
        assert sent[e.classes[0].minor].ceil == CEILING

        # a leaf created again is another cgroup: the rule names the old one (nftables
        # resolved the path when it loaded it) until it is loaded again
        shaped.rmdir()
        shaped.mkdir()
        [stale] = nft.rules() or []
        assert stale.leaf != rel
        nft.load(nft_script(e, {"shaped": rel}))
        assert [m.leaf for m in nft.rules() or []] == [rel]
        capped = received_rate(iperf(shaped, "5201", 3))
        assert abs(capped - CEILING) <= 0.05 * CEILING, capped
    finally:
        nft.remove()
        htb.remove(DEV)
    assert nft.rules() is None
    root = htb.root(DEV)
    assert root is None or root[1] >> 16 == 0, root  # the kernel's default is back
    htb.close()


def test_a_root_qdisc_someone_else_added_is_left_alone(peer: None) -> None:
    sh("tc", "qdisc", "add", "dev", DEV, "root", "handle", "1:", "tbf", "rate", "10mbit",
       "burst", "32kbit", "latency", "400ms")  # fmt: skip
    shaper = Shaper()
    try:
        assert shaper.problem(egress()) == (
            f"{DEV} has a root qdisc nxr does not own (tbf 1:): remove it, or leave {DEV} out"
            " of host.net.interfaces"
        )
        shaper.remove([DEV])  # not nxr's: nothing happens
        assert "tbf 1:" in sh("tc", "qdisc", "show", "dev", DEV)
    finally:
        shaper.htb.close()


def shaping() -> tuple[str, str]:
    """nxr's table and HTB classes on DEV, as the kernel lists them (no counters; not
    fq_codel's classes, which are its flows of the moment)."""
    table = subprocess.run(
        ["nft", "list", "table", "inet", "nxr"], capture_output=True, text=True
    ).stdout
    classes = sh("tc", "class", "show", "dev", DEV).splitlines()
    return table, "\n".join(sorted(c for c in classes if c.startswith("class htb")))


def test_nxrd_shapes_its_workloads_adopts_after_a_crash_and_cleans_up(
    peer: None, tmp_path: Path, cgroup_root: Path
) -> None:
    profile = f"""
[host.net]
interfaces = ["{DEV}"]
link = "1Gbit"

[workloads.sender]
command = ["sleep", "1000"]
class = "batch"
net = {{ egress = "50Mbit", guarantee = "5Mbit" }}
"""
    d = Nxrd(tmp_path, profile, cgroup_root).start()
    leaf = f"{cgroup_root.relative_to('/sys/fs/cgroup')}/batch/sender"
    try:
        d.wait_for(lambda: d.state_of("sender").get("state") == "ready", 120)
        d.wait_for(lambda: f'"{leaf}"' in shaping()[0], 30)
        table, classes = shaping()
        assert table.count("socket cgroupv2") == 1
        assert "htb 6e78:1 root" in classes and "ceil 50Mbit" in classes, classes

        # kill -9: the next nxrd finds the rules and the tree as planned, and keeps them
        d.stop(signal.SIGKILL)
        assert shaping() == (table, classes)
        d.start()
        d.wait_for(lambda: any("took over" in e[2] for e in d.events("nxrd")), 120)
        time.sleep(2)
        assert shaping() == (table, classes)  # identical: not built again, not doubled

        # a rule deleted by hand is put back, with an event
        sh("nft", "flush", "chain", "inet", "nxr", "egress")
        d.wait_for(lambda: any("drifted" in e[2] for e in d.events("nxrd")), 60)
        d.wait_for(lambda: shaping() == (table, classes), 30)
    finally:
        assert d.stop() == 0
    assert (
        "nxr"
        not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    )
    assert "6e78" not in sh("tc", "qdisc", "show", "dev", DEV)
