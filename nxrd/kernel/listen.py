"""Connections waiting in listening TCP sockets' accept queues, by port (sock_diag through
pyroute2): requests a server has not yet taken. A leading signal for the controller: a
queue shows before any of its requests is answered late, and a server's own latency
histogram never sees it (its clock starts when it accepts)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from pyroute2 import DiagSocket
from pyroute2.netlink.exceptions import NetlinkError

TCP_LISTEN = 10


class ListenQueues:
    """One netlink socket, opened at the first read and kept."""

    def __init__(self) -> None:
        self.diag: DiagSocket | None = None

    def read(self, ports: Iterable[int]) -> dict[int, int]:
        """Per port listened on, the connections waiting to be accepted (IPv4 and IPv6
        together); a port nothing listens on is missing. Empty when sock_diag fails."""
        wanted = set(ports)
        if not wanted:
            return {}
        out: dict[int, int] = {}
        try:
            if self.diag is None:
                self.diag = DiagSocket()
                self.diag.bind()
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in self.diag.get_sock_stats(family=family, states=1 << TCP_LISTEN):
                    port = msg["idiag_sport"]
                    if port in wanted:
                        out[port] = out.get(port, 0) + int(msg["idiag_rqueue"])
        except (OSError, NetlinkError):
            self.close()
            return {}
        return out

    def close(self) -> None:
        if self.diag is not None:
            self.diag.close()
            self.diag = None
