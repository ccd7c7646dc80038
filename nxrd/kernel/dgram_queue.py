"""How many datagrams a unix socket queues before its senders' datagrams are dropped:
net.unix.max_dgram_qlen, read when a socket is made. The kernel's default is 10; systemd
raises it to 512 when it boots, but a host without systemd keeps 10, and a front at a
thousand requests a second logs more than that while nxrd's loop is busy for 10 ms
(HAProxy's sends do not wait: the line is gone, counted in its DroppedLogs)."""

from __future__ import annotations

from pathlib import Path

QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def raise_to(at_least: int, path: Path = QLEN) -> int | None:
    """Raise the setting to at_least, as systemd does; what it was when it was lower
    (None: it already allowed that many, or it cannot be read or written)."""
    try:
        was = int(path.read_text())
        if was >= at_least:
            return None
        path.write_text(f"{at_least}\n")
    except (OSError, ValueError):
        return None
    return was
