"""Profiles: TOML -> validated model.

Names load on first use (PEP 562): nxrctl's socket commands import nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nxrd.profile.load import load_profile, parse_profile, validate_data
    from nxrd.profile.model import Profile, Workload

_WHERE = {
    "load_profile": "nxrd.profile.load",
    "parse_profile": "nxrd.profile.load",
    "validate_data": "nxrd.profile.load",
    "Profile": "nxrd.profile.model",
    "Workload": "nxrd.profile.model",
}
__all__ = ["Profile", "Workload", "load_profile", "parse_profile", "validate_data"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nxrd.profile' has no attribute {name!r}")
