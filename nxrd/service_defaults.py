"""Defaults shared by the CLI and the service (kept apart so the CLI imports no kernel code)."""

DEFAULT_STATE_DIR = "/var/lib/nxr"
