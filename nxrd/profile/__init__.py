"""Profiles: TOML -> validated model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nxrd.lazy import attributes

if TYPE_CHECKING:
    from nxrd.profile.load import load_profile, parse_profile, validate_data
    from nxrd.profile.model import Profile, Workload

__all__ = ["Profile", "Workload", "load_profile", "parse_profile", "validate_data"]
__getattr__ = attributes(
    __name__,
    {
        "load_profile": "nxrd.profile.load",
        "parse_profile": "nxrd.profile.load",
        "validate_data": "nxrd.profile.load",
        "Profile": "nxrd.profile.model",
        "Workload": "nxrd.profile.model",
    },
)
