"""Readiness checks: one attempt each, with short timeouts (the daemon loop waits on them)."""

from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request

from nxrd.profile.model import Ready

PROBE_TIMEOUT = 1.0  # seconds one attempt may take; ready.interval spaces the attempts


def check(ready: Ready) -> bool:
    """Whether the workload answers its readiness check right now."""
    if ready.tcp is not None:
        host, _, port = ready.tcp.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT):
                return True
        except OSError:
            return False
    if ready.http is not None:
        try:
            with urllib.request.urlopen(ready.http, timeout=PROBE_TIMEOUT) as r:
                return bool(200 <= r.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            return False
    if ready.exec is not None:
        try:
            done = subprocess.run(
                list(ready.exec),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=max(PROBE_TIMEOUT, ready.interval),
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0
    return True
