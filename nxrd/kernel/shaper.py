"""Egress shaping on the kernel: nftables marks each shaped workload's packets by the cgroup
of the socket that sends them, and on each shaped interface an HTB tree that nxr owns puts
each mark in its workload's class (docs/network.md).

nftables: a table `inet nxr` of nxr's own, replaced whole in one transaction (`nft -j -f -`,
atomic), with a rule per running workload, `socket cgroupv2 level N "PATH"`. nftables
resolves PATH to a cgroup id when the rule is loaded: a leaf created again (a restart) needs
its rule loaded again, and a leaf that does not exist cannot have one.

tc, through pyroute2's netlink: the root qdisc `6e78:` (htb), the link's class `6e78:1`,
the default class `6e78:2` for traffic of no shaped workload, a class per workload below the
link's with an fq_codel leaf, and an fw filter per mark. A root qdisc that someone else
added (any handle but 0:, the kernel's default, and nxr's own) is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxrd.errors import KernelError
from nxrd.model.egress import DEFAULT, DEFAULT_PRIORITY, FIRST, MAJOR, PARENT, Egress, EgressClass

TABLE = {"family": "inet", "name": "nxr"}
CHAIN = "egress"
# after conntrack and before routing's own marks are read (the mangle priority)
MANGLE = -150
FILTER_PRIO = 1
ETH_P_ALL = 0x0003


def nft_script(egress: Egress, paths: Mapping[str, str]) -> str:
    """nxr's whole table, for `nft -f -` (one transaction): a rule for each shaped workload
    with a leaf (paths: workload -> its leaf, relative to the cgroup2 mount). Text, not
    JSON: nftables 1.0.6 (Debian 12) reads `socket cgroupv2` only in its own syntax."""
    family, name = TABLE["family"], TABLE["name"]
    lines = [
        f"add table {family} {name}",
        f"flush table {family} {name}",
        f"add chain {family} {name} {CHAIN} {{ type filter hook output priority {MANGLE};"
        " policy accept; }",
    ]
    for c in egress.classes:
        path = paths.get(c.workload)
        if path is not None:  # else not running: no leaf to name
            lines.append(f"add rule {family} {name} {CHAIN} {rule(c.workload, path, c.mark)}")
    return "\n".join(lines) + "\n"


def rule(workload: str, path: str, mark: int) -> str:
    path = path.strip("/")
    if any(ch in path + workload for ch in '"\\\n;'):
        raise KernelError(f"{workload}: cgroup path {path!r} cannot be named in an nftables rule")
    level = path.count("/") + 1
    return f'socket cgroupv2 level {level} "{path}" meta mark set {mark:#x} comment "{workload}"'


@dataclass(frozen=True)
class Marked:
    """A rule as nftables lists it: the workload (its comment), the leaf it matches (a
    path, or the bare cgroup id when that leaf is gone) and the mark it sets."""

    workload: str
    leaf: str
    mark: int


def listed_rules(listing: dict[str, Any]) -> list[Marked]:
    """nxr's rules from `nft -j list table inet nxr`."""
    out = []
    for item in listing.get("nftables", []):
        r = item.get("rule")
        if not isinstance(r, dict) or r.get("chain") != CHAIN:
            continue
        leaf, mark = "", -1
        for e in r.get("expr", []):
            if "match" in e and "socket" in e["match"].get("left", {}):
                leaf = str(e["match"]["right"])
            if "mangle" in e and isinstance(e["mangle"].get("value"), int):
                mark = e["mangle"]["value"]
        out.append(Marked(str(r.get("comment", "")), leaf, mark))
    return out


class Nft:
    """The `nft` command, with JSON in and out."""

    def __init__(self, binary: str = "nft") -> None:
        self.binary = binary

    def available(self) -> str | None:
        """Why nft cannot be used, or None."""
        if shutil.which(self.binary) is None:
            return "no nft command: install Debian's nftables package"
        return None

    def run(self, *args: str, stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                [self.binary, *args], input=stdin, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelError(f"nft: {e}") from None
        if done.returncode != 0:
            first = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise KernelError(f"nft: {first[0] if first else f'exit {done.returncode}'}")
        return done.stdout

    def load(self, script: str) -> None:
        self.run("-f", "-", stdin=script)

    def rules(self) -> list[Marked] | None:
        """nxr's rules, or None when its table is not there."""
        try:
            out = self.run("-j", "list", "table", TABLE["family"], TABLE["name"])
        except KernelError as e:
            if "No such file or directory" in str(e):
                return None
            raise
        return listed_rules(json.loads(out or "{}"))

    def remove(self) -> None:
        if self.rules() is not None:
            self.run("delete", "table", TABLE["family"], TABLE["name"])


@dataclass(frozen=True)
class ClassStats:
    """One HTB class as the kernel reports it."""

    rate: int  # bits/s
    ceil: int  # bits/s
    sent: int  # bytes sent through it
    dropped: int  # packets dropped (its queue was full)


# What the HTB tree needs of the kernel, and where Debian's kernels keep each module
TC_MODULES = {"sch_htb": "net/sched", "sch_fq_codel": "net/sched", "cls_fw": "net/sched"}


def missing_modules(root: Path = Path("/"), release: str | None = None) -> list[str]:
    """The tc modules this kernel has neither loaded, built in, nor installed; none when
    that cannot be told (no /lib/modules for the running kernel)."""
    release = release or os.uname().release
    modules = root / "lib/modules" / release
    if not modules.is_dir():
        return []
    builtin_file = modules / "modules.builtin"
    builtin = builtin_file.read_text() if builtin_file.is_file() else ""
    out = []
    for name, where in TC_MODULES.items():
        if (root / "sys/module" / name).is_dir() or f"/{name}.ko" in builtin:
            continue
        if not any((modules / "kernel" / where).glob(f"{name}.ko*")):
            out.append(name)
    return out


def some_cgroup(mount: str = "/sys/fs/cgroup") -> str | None:
    """A cgroup that exists, relative to the cgroup2 mount, for a rule that is checked and
    never loaded: nxrd's own unless that is the root, else the first below the root."""
    with open("/proc/self/cgroup", encoding="ascii") as f:
        own = next((line[3:].strip().strip("/") for line in f if line.startswith("0::")), "")
    if own:
        return own
    root = Path(mount)
    return next((p.name for p in sorted(root.iterdir()) if p.is_dir()), None)


def burst(bits: int) -> int:
    """Bytes a class may send at once: 10 ms at its rate, and at least two 64 KiB segments.
    HTB's default (rate / HZ plus one MTU, 1600 bytes at the kernel's psched clock) is far
    under the segments TSO and GSO hand it, and held a 50Mbit ceiling at 5Mbit."""
    return max(bits // 8 // 100, 2 * 65536)


def handle(major: int, minor: int = 0) -> int:
    return (major << 16) | minor


class Htb:
    """nxr's HTB tree on each shaped interface, through pyroute2."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute  # netlink: imported when nxrd shapes something

        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise KernelError(f"no interface {name}")
        return int(found[0])

    def root(self, name: str) -> tuple[str, int] | None:
        """The root qdisc of an interface: its kind and handle (None: none at all)."""
        for q in self.ipr.get_qdiscs(index=self.index(name)):
            if q["parent"] == 0xFFFFFFFF:
                return str(q.get_attr("TCA_KIND")), int(q["handle"])
        return None

    def foreign(self, name: str) -> str | None:
        """What root qdisc someone else put on the interface, or None when it is the
        kernel's default or nxr's own."""
        root = self.root(name)
        if root is None or root[1] >> 16 in (0, MAJOR):
            return None
        kind, h = root
        return f"{kind} {h >> 16:x}:"

    def build(self, name: str, link: int, egress: Egress) -> None:
        """The whole tree on one interface, replacing nxr's own or the kernel's default."""
        idx = self.index(name)
        root = self.root(name)
        if root is not None and root[1] >> 16 == MAJOR:
            self.ipr.tc("del", index=idx, handle=handle(MAJOR), parent=0xFFFFFFFF)
        self.ipr.tc("add", "htb", idx, handle(MAJOR), default=DEFAULT)
        self._class(idx, PARENT, handle(MAJOR), link, link, 0)
        self._class(
            idx, DEFAULT, handle(MAJOR, PARENT), egress.default_rate(link), link, DEFAULT_PRIORITY
        )
        self._leaf(idx, DEFAULT)
        for c in egress.classes:
            self._class(idx, c.minor, handle(MAJOR, PARENT), c.rate, c.ceil, c.priority)
            self._leaf(idx, c.minor)
            self.ipr.tc(
                "add-filter",
                "fw",
                idx,
                c.mark,
                parent=handle(MAJOR),
                classid=handle(MAJOR, c.minor),
                prio=FILTER_PRIO,
                protocol=ETH_P_ALL,
            )

    def retune(self, name: str, link: int, egress: Egress) -> None:
        """The classes' rates and ceilings changed in place (`tc class change`)."""
        idx = self.index(name)
        self._class(
            idx,
            DEFAULT,
            handle(MAJOR, PARENT),
            egress.default_rate(link),
            link,
            DEFAULT_PRIORITY,
            "change-class",
        )
        for c in egress.classes:
            self._class(
                idx, c.minor, handle(MAJOR, PARENT), c.rate, c.ceil, c.priority, "change-class"
            )

    def _class(
        self,
        idx: int,
        minor: int,
        parent: int,
        rate: int,
        ceil: int,
        prio: int,
        verb: str = "add-class",
    ) -> None:
        self.ipr.tc(
            verb,
            "htb",
            idx,
            handle(MAJOR, minor),
            parent=parent,
            rate=f"{rate}bit",
            ceil=f"{ceil}bit",
            burst=burst(rate),
            cburst=burst(ceil),
            prio=prio,
        )

    def _leaf(self, idx: int, minor: int) -> None:
        self.ipr.tc("add", "fq_codel", idx, handle(minor), parent=handle(MAJOR, minor))

    def remove(self, name: str) -> None:
        """nxr's tree off the interface (the kernel puts its default back)."""
        root = self.root(name)
        if root is not None and root[1] >> 16 == MAJOR:
            self.ipr.tc("del", index=self.index(name), handle=handle(MAJOR), parent=0xFFFFFFFF)

    def classes(self, name: str) -> dict[int, ClassStats]:
        """nxr's classes on the interface, by minor."""
        out = {}
        for c in self.ipr.get_classes(index=self.index(name)):
            h = int(c["handle"])
            if h >> 16 != MAJOR:
                continue
            options = c.get_attr("TCA_OPTIONS")
            parms = options.get_attr("TCA_HTB_PARMS") if options is not None else None
            stats = c.get_attr("TCA_STATS2")
            basic = stats.get_attr("TCA_STATS_BASIC") if stats is not None else None
            queue = stats.get_attr("TCA_STATS_QUEUE") if stats is not None else None
            rate, ceil = (
                (
                    options.get_attr("TCA_HTB_RATE64") or parms["rate"],
                    options.get_attr("TCA_HTB_CEIL64") or parms["ceil"],
                )
                if parms is not None
                else (0, 0)
            )
            sent = int(basic["bytes"]) if basic is not None else 0
            dropped = int(queue["drops"]) if queue is not None else 0
            # HTB's rates are bytes/s
            out[h & 0xFFFF] = ClassStats(int(rate) * 8, int(ceil) * 8, sent, dropped)
        return out


def egress_requirement(shaper: Shaper) -> tuple[bool, str]:
    """For `nxrd check`: whether this host can mark packets by cgroup (optional: only a
    profile with `net` needs it)."""
    probe = Egress(
        interfaces=[],
        classes=[EgressClass(workload="check", minor=FIRST, rate=8, ceil=8, priority=0)],
    )
    why = shaper.problem(probe)
    if why is None:
        return True, "nftables marks packets by cgroup (socket cgroupv2)"
    return False, why


@dataclass(frozen=True)
class Shaped:
    """What the kernel has of nxr's shaping now."""

    rules: list[Marked] | None  # None: no table of nxr's
    trees: dict[str, dict[int, ClassStats] | None]  # interface -> classes; None: none


class Shaper:
    """nxr's egress shaping on this host: nftables marks and HTB trees (Linux)."""

    def __init__(self) -> None:
        self.nft = Nft()
        self._htb: Htb | None = None

    @property
    def htb(self) -> Htb:
        if self._htb is None:
            self._htb = Htb()
        return self._htb

    def problem(self, egress: Egress) -> str | None:
        """Why this host cannot shape as planned (a one-line error), before anything is
        applied: no nft command, or a root qdisc that is someone else's."""
        missing = self.nft.available()
        if missing is not None:
            return missing
        # the kernel's nftables with its socket cgroupv2 match, checked (`nft -c`), not
        # loaded, on some cgroup that exists (none to name: the first load will say)
        some = some_cgroup()
        if some is not None and egress.classes:
            try:
                self.nft.run(
                    "-c", "-f", "-", stdin=nft_script(egress, {egress.classes[0].workload: some})
                )
            except KernelError as e:
                return f"nftables cannot mark packets by cgroup here ({e})"
        if egress.interfaces and (absent := missing_modules()):
            return f"the kernel has no {', '.join(absent)} (HTB shaping needs them)"
        for i in egress.interfaces:
            try:
                other = self.htb.foreign(i.name)
            except KernelError as e:
                return str(e)
            if other is not None:
                return (
                    f"{i.name} has a root qdisc nxr does not own ({other}): remove it, or leave"
                    f" {i.name} out of host.net.interfaces"
                )
        return None

    def build(self, egress: Egress) -> None:
        for i in egress.interfaces:
            self._netlink(lambda i=i: self.htb.build(i.name, i.link, egress), i.name)

    def retune(self, egress: Egress) -> None:
        for i in egress.interfaces:
            self._netlink(lambda i=i: self.htb.retune(i.name, i.link, egress), i.name)

    def mark(self, egress: Egress, paths: Mapping[str, str]) -> None:
        self.nft.load(nft_script(egress, paths))

    def read(self, interfaces: list[str]) -> Shaped:
        return Shaped(self.nft.rules(), self.trees(interfaces))

    def trees(self, interfaces: list[str]) -> dict[str, dict[int, ClassStats] | None]:
        """nxr's classes on each interface (None: no tree of nxr's there)."""
        trees: dict[str, dict[int, ClassStats] | None] = {}
        for name in interfaces:
            try:
                root = self.htb.root(name)
                ours = root is not None and root[1] >> 16 == MAJOR
                trees[name] = self.htb.classes(name) if ours else None
            except (KernelError, OSError):
                trees[name] = None
        return trees

    def remove(self, interfaces: list[str]) -> None:
        self.nft.remove()
        for name in interfaces:
            self._netlink(lambda name=name: self.htb.remove(name), name)

    def _netlink(self, call: Any, name: str) -> None:
        try:
            call()
        except KernelError:
            raise
        except Exception as e:  # pyroute2's NetlinkError and its kin
            raise KernelError(f"tc on {name}: {e}") from None
