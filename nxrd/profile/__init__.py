"""Profiles: TOML -> validated model."""

from nxrd.profile.load import load_profile, parse_profile, validate_data
from nxrd.profile.model import Profile, Workload

__all__ = ["Profile", "Workload", "load_profile", "parse_profile", "validate_data"]
