"""Whatever the input, a profile is either valid or a ProfileError: never another exception."""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxrd.errors import ProfileError
from nxrd.plan import load_topology, make_plan
from nxrd.profile import parse_profile, validate_data
from nxrd.profile.model import Workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [tomllib.loads(p.read_text()) for p in sorted((ROOT / "profiles").glob("*.toml"))]
TOPOLOGIES = [load_topology(p) for p in sorted((ROOT / "tests/fixtures/topologies").glob("*.json"))]
KEYS = [f.alias or n for n, f in Workload.model_fields.items()] + ["slots", "host", "x", "../x"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["4G", "max", "150%", "2-3", "auto", "10s", "-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _only_profile_errors(data: Any) -> None:
    try:
        profile = validate_data(data, "fuzz.toml")
    except ProfileError as e:
        assert e.lines() and all("\n" not in line for line in e.lines())
        return
    for topo in TOPOLOGIES:
        try:
            make_plan(profile, topo, "fuzz.toml")
        except ProfileError as e:  # PlanError is a ProfileError
            assert e.lines()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ProfileError):
        parse_profile(text, "fuzz.toml")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["host", "pools", "workloads", "x"]), values, max_size=3))
def test_arbitrary_documents(data: dict[str, Any]) -> None:
    _only_profile_errors(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_example_profiles(example: dict[str, Any], data: st.DataObject) -> None:
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in example.items()}
    workloads = {k: dict(v) for k, v in doc["workloads"].items()}
    name = data.draw(st.sampled_from(sorted(workloads)))
    key = data.draw(st.sampled_from(KEYS))
    workloads[name][key] = data.draw(values)
    doc["workloads"] = workloads
    _only_profile_errors(doc)
