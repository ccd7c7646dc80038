"""Small file helpers shared by nxrd's state writers."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Write whole, flush to disk, then rename: a reader (or a crash) never sees half a
    file. Private (0600) unless asked: state files hold profiles' env values."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask, and whatever an old .tmp had
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def private_dir(path: Path) -> None:
    """A directory only its owner (root, for nxrd) may read: logs and state live there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def shared_dir(path: Path) -> None:
    """A directory other users may enter (a socket's, the cpus files'): made 0755 whatever
    the umask (the unit's is 0077); one that exists is left as its owner set it."""
    if path.is_dir():
        return
    shared_dir(path.parent)
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o755)


def bind_unix(sock: socket.socket, path: str, mode: int) -> None:
    """Bind a unix socket created with mode at once: the umask is set for the bind, and
    no chmod of the path follows, which a symlink swapped in between would redirect."""
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
