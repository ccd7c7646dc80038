"""Egress shaping as the profile declares it and the planner divides the link: rates spelled
as tc spells them, one-line refusals, and classes and marks that stay put across reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.errors import KernelError, PlanError, ProfileError
from nxrd.kernel.shaper import Marked
from nxrd.model.egress import MARK_BASE, Egress, EgressClass, Interface, minors
from nxrd.model.topology import Topology, load_topology
from nxrd.model.units import format_rate, parse_rate
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES

HOST = '[host.net]\ninterfaces = ["eth0"]\n'


def wl(name: str, net: str, cls: str = "batch", extra: str = "") -> str:
    return f'[workloads.{name}]\ncommand = ["x"]\nclass = "{cls}"\nnet = {{{net}}}\n{extra}'


def topo(links: dict[str, int | None]) -> Topology:
    t = load_topology(TOPOLOGIES / "smt16-1gpu.json")
    return t.model_copy(update={"interfaces": links})


def errors(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.toml")
    return info.value.lines()


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("200Mbit", 200_000_000),
        ("1gbit", 1_000_000_000),
        ("25MBps", 200_000_000),  # tc's Bps: bytes per second
        ("1.5Gbit", 1_500_000_000),
        ("100kibit", 102_400),
        ("2MiBps", 16 * 1024 * 1024),
    ],
)
def test_rates_are_read_as_tc_reads_them(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("200", "unknown rate unit '(none)'"),  # tc would read bits; say it instead
        ("200mb", "unknown rate unit 'mb'"),
        ("fast", "not a rate"),
        ("0bit", "out of range"),
    ],
)
def test_a_rate_that_is_not_one_is_a_one_line_error(text: str, said: str) -> None:
    [line] = errors(HOST + wl("a", f'egress = "{text}"'))
    assert line.startswith("p.toml: workloads.a.net.egress: ") and said in line


def test_rates_print_as_tc_prints_them() -> None:
    assert [format_rate(parse_rate(r)) for r in ("200Mbit", "1.5Gbit", "800kbit")] == [
        "200Mbit",
        "1.5Gbit",
        "800Kbit",
    ]


def test_bad_shaping_is_refused_naming_the_key() -> None:
    text = (
        '[host.net]\ninterfaces = ["eth0", "a/b"]\nlink = "100Mbit"\n'
        + wl("a", 'egress = "10Mbit", guarantee = "20Mbit"')
        + wl("b", 'guarantee = "90Mbit"')
        + wl("c", "")
    )
    assert errors(text) == [
        "p.toml: host.net.interfaces: 'a/b' is not an interface name",
        "p.toml: workloads.a.net.guarantee: is above egress (20Mbit > 10Mbit)",
        "p.toml: workloads.c.net: give egress (a ceiling), guarantee (a floor) or both",
        "p.toml: host.net.link: the workloads' guarantees add up to 110Mbit, more than the"
        " link's 100Mbit",
    ]
    assert errors(wl("a", 'egress = "1Gbit"')) == [
        "p.toml: workloads.a.net: no interface to shape: list them in [host.net] interfaces"
    ]


def test_the_link_is_divided_by_class_with_floors_and_ceilings() -> None:
    text = (
        HOST
        + wl("chat", 'guarantee = "300Mbit"', "latency-critical", "cpus = 1\n")
        + wl("embed", 'egress = "200Mbit", guarantee = "50Mbit"')
        + wl("index", 'egress = "100Mbit", priority = 7', "background")
        + '[workloads.other]\ncommand = ["x"]\n'
    )
    plan = make_plan(parse_profile(text), topo({"eth0": 1_000_000_000, "lo": None}))
    assert plan.egress is not None
    assert [(i.name, i.link) for i in plan.egress.interfaces] == [("eth0", 1_000_000_000)]
    got = {c.workload: (c.rate, c.ceil, c.priority) for c in plan.egress.classes}
    assert got == {
        "chat": (300_000_000, 1_000_000_000, 0),  # no ceiling: the whole link when it is idle
        "embed": (50_000_000, 200_000_000, 2),
        "index": (1_000_000, 100_000_000, 7),  # no floor: a thousandth, so HTB has a rate
    }
    # traffic of no shaped workload keeps what the ceilings leave (chat has none: a
    # hundredth of the link)
    assert plan.egress.default_rate(1_000_000_000) == 10_000_000
    capped = plan.egress.model_copy(update={"classes": plan.egress.classes[1:]})
    assert capped.default_rate(1_000_000_000) == 700_000_000
    marks = {c.mark for c in plan.egress.classes}
    assert len(marks) == 3 and all(m & 0xFFFF0000 == MARK_BASE for m in marks)
    assert "egress" in plan.model_dump(mode="json", by_alias=True)
    plain = make_plan(
        parse_profile(text.split("[workloads.chat]")[0] + "[workloads.x]\ncommand=['x']\n"),
        topo({}),
    )
    assert "egress" not in plain.model_dump(mode="json", by_alias=True)


def test_a_workload_keeps_its_class_and_mark_when_others_come_and_go() -> None:
    names = [f"w{i}" for i in range(40)]
    before = minors(names)
    after = minors([*names[5:], "new", "other"])
    assert all(after[n] == before[n] for n in names[5:])
    assert len(set(after.values())) == len(after)


def test_the_planner_refuses_what_the_host_cannot_shape() -> None:
    text = HOST + wl("embed", 'egress = "200Mbit"')
    with pytest.raises(PlanError) as e:
        make_plan(parse_profile(text), topo({"lo": None, "wlan0": 54_000_000}))
    assert e.value.lines() == [
        "host.net.interfaces: no interface eth0 on this host (it has lo, wlan0)"
    ]
    with pytest.raises(PlanError) as e:
        make_plan(parse_profile(text), topo({"eth0": None}))
    assert e.value.lines() == [
        "host.net.link: eth0 does not report its speed: give the link's rate"
    ]
    with pytest.raises(PlanError) as e:
        make_plan(parse_profile(text), topo({"eth0": 100_000_000}))
    assert e.value.lines() == ["workloads.embed.net: 200Mbit is more than the 100Mbit link"]
    ok = make_plan(
        parse_profile(text.replace("]\n", ']\nlink = "1Gbit"\n', 1)), topo({"eth0": None})
    )
    assert ok.egress is not None and ok.egress.interfaces[0].link == 1_000_000_000


def test_the_rules_are_one_nft_transaction_and_read_back_from_its_listing() -> None:
    from nxrd.kernel.shaper import listed_rules, nft_script

    classes = [
        EgressClass(workload="embed", minor=0x123, rate=8, ceil=100, priority=2),
        EgressClass(workload="index", minor=0x456, rate=8, ceil=100, priority=3),
    ]
    e = Egress(interfaces=[Interface(name="eth0", link=1000)], classes=classes)
    script = nft_script(e, {"embed": "/nxr/batch/embed"})  # index is not running
    assert script.splitlines() == [
        "add table inet nxr",
        "flush table inet nxr",
        "add chain inet nxr egress { type filter hook output priority -150; policy accept; }",
        'add rule inet nxr egress socket cgroupv2 level 3 "nxr/batch/embed"'
        ' meta mark set 0x6e780123 comment "embed"',
    ]
    with pytest.raises(KernelError):
        nft_script(e, {"embed": 'nxr/"x'})
    # as nft 1.0.6 lists it (`nft -j list table inet nxr`): the path, or the bare cgroup id
    # once that leaf is gone
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "inet", "table": "nxr", "name": "egress"}},
            {
                "rule": {
                    "chain": "egress",
                    "comment": "embed",
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"socket": {"key": "cgroupv2"}},
                                "right": "nxr/batch/embed",
                            }
                        },
                        {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 0x6E780123}},
                    ],
                }
            },
        ]
    }
    assert listed_rules(listing) == [Marked("embed", "nxr/batch/embed", 0x6E780123)]


def test_a_kernel_without_htb_is_named_before_anything_is_applied(tmp_path: Path) -> None:
    from nxrd.kernel.shaper import missing_modules

    assert missing_modules(tmp_path, "6.1.0-1-amd64") == []  # no modules to read: unknown
    modules = tmp_path / "lib/modules/6.1.0-1-amd64"
    (modules / "kernel/net/sched").mkdir(parents=True)
    (modules / "modules.builtin").write_text("kernel/net/sched/sch_fq_codel.ko\n")
    (modules / "kernel/net/sched/cls_fw.ko.xz").write_bytes(b"")
    assert missing_modules(tmp_path, "6.1.0-1-amd64") == ["sch_htb"]
    (tmp_path / "sys/module/sch_htb").mkdir(parents=True)  # loaded
    assert missing_modules(tmp_path, "6.1.0-1-amd64") == []
