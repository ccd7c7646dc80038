"""Egress shaping as planned: on each shaped interface an HTB tree that nxr owns, a class per
shaped workload, and the packet mark its sockets get (docs/network.md).

Handles and marks are nxr's own: the root qdisc is `6e78:` ("nx"), a workload's class and
mark are derived from its name, so a reload that adds or removes a workload leaves the
others' classes as they were, and a mark in nxr's range (0x6e78xxxx) is never another's.
"""

from __future__ import annotations

import zlib

from pydantic import Field

from nxrd.model.base import Data

MAJOR = 0x6E78  # the root qdisc's handle, 6e78:
PARENT = 0x1  # 6e78:1, the whole link
DEFAULT = 0x2  # 6e78:2, traffic of no shaped workload
FIRST, LAST = 0x10, 0xFFF0  # workloads' minors
MARK_BASE = MAJOR << 16
MARK_MASK = 0xFFFF0000

# HTB's prio by class when the profile gives none: the lower goes first for spare bandwidth
PRIORITY = {"latency-critical": 0, "interactive": 1, "batch": 2, "background": 3}
DEFAULT_PRIORITY = 4  # traffic of no workload lends after every class


class EgressClass(Data):
    workload: str
    minor: int = Field(description="its HTB class, 6e78:MINOR; its sockets' mark 0x6e78MINOR")
    rate: int = Field(description="bits/s guaranteed whenever it sends (HTB's rate)")
    ceil: int = Field(description="bits/s it never exceeds (HTB's ceil)")
    priority: int = Field(description="HTB's prio: the lower borrows spare bandwidth first")

    @property
    def mark(self) -> int:
        return MARK_BASE | self.minor


class Interface(Data):
    name: str
    link: int = Field(description="bits/s the HTB tree divides")


class Egress(Data):
    interfaces: list[Interface]
    classes: list[EgressClass]

    def default_rate(self, link: int) -> int:
        """What traffic of no shaped workload is guaranteed: what the shaped workloads'
        ceilings leave, at least a hundredth of the link. Not what their floors leave: a
        guarantee that large would keep a shaped workload under its ceiling whenever
        unshaped traffic fills the link, though the link has room for both."""
        return max(link // 100, link - sum(c.ceil for c in self.classes))


def minors(names: list[str]) -> dict[str, int]:
    """A stable minor per workload: from its name's CRC, the next free one on a clash
    (assigned in name order, so the same names always get the same minors)."""
    span = LAST - FIRST
    out: dict[str, int] = {}
    taken: set[int] = set()
    for name in sorted(names):
        minor = FIRST + zlib.crc32(name.encode()) % span
        while minor in taken:
            minor = FIRST + (minor - FIRST + 1) % span
        taken.add(minor)
        out[name] = minor
    return out
