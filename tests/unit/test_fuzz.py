"""Whatever the input, a profile is either valid or a ProfileError: never another exception."""

from __future__ import annotations

import contextlib
import copy
import tomllib
import zlib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from nxrd.errors import KernelError, ProfileError
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import FakeCgroupFS
from nxrd.model.plan import Plan
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
            plan = make_plan(profile, topo, "fuzz.toml")
        except ProfileError as e:  # PlanError is a ProfileError
            assert e.lines()
            continue
        _inside_and_all_or_nothing(plan)


def _inside_and_all_or_nothing(plan: Plan) -> None:
    """A plan's tree lies inside nxrd's subtree (the fake cgroupfs refuses any path that
    leaves it, as LinuxCgroupFS does), and a write the kernel refuses part way leaves the
    tree exactly as it was: no partial apply."""
    fs = FakeCgroupFS()
    apply_plan(plan, fs)  # raises KernelError on a path outside the subtree
    writes = [(rel, f) for rel, f, _ in fs.writes if rel]
    if not writes:
        return
    rel, filename = writes[zlib.crc32(repr(writes).encode()) % len(writes)]  # any one
    fresh = FakeCgroupFS()
    before = copy.deepcopy(fresh.dirs)
    fresh.fail_on.add((rel, filename))
    with contextlib.suppress(KernelError):
        apply_plan(plan, fresh)
        raise AssertionError(f"the write of {filename} in {rel} was to fail")
    assert fresh.dirs == before, f"a failed write of {filename} in {rel} left changes"


# 10 000 generated profiles a run: half from a fixed seed (the same cases every run, so a
# regression shows at once), half from a seed that changes each run (new cases; a failure
# prints the blob that replays it). No deadline: a slow CI machine is not a failure.
FIXED_SEED = 20261206
FUZZ = settings(
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
    print_blob=True,
)
FUZZ_MORE = settings(FUZZ, max_examples=1500)
TEXT = st.text(max_size=300)
DOCUMENTS = st.dictionaries(
    st.sampled_from(["host", "pools", "workloads", "x"]), values, max_size=3
)


def _text(text: str) -> None:
    with contextlib.suppress(ProfileError):
        parse_profile(text, "fuzz.toml")


def _mutated(example: dict[str, Any], data: st.DataObject) -> None:
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in example.items()}
    workloads = {k: dict(v) for k, v in doc["workloads"].items()}
    name = data.draw(st.sampled_from(sorted(workloads)))
    key = data.draw(st.sampled_from(KEYS))
    workloads[name][key] = data.draw(values)
    doc["workloads"] = workloads
    _only_profile_errors(doc)


@seed(FIXED_SEED)
@FUZZ
@given(TEXT)
def test_arbitrary_text(text: str) -> None:
    _text(text)


@FUZZ
@given(TEXT)
def test_arbitrary_text_new_cases(text: str) -> None:
    _text(text)


@seed(FIXED_SEED)
@FUZZ_MORE
@given(DOCUMENTS)
def test_arbitrary_documents(data: dict[str, Any]) -> None:
    _only_profile_errors(data)


@FUZZ_MORE
@given(DOCUMENTS)
def test_arbitrary_documents_new_cases(data: dict[str, Any]) -> None:
    _only_profile_errors(data)


@seed(FIXED_SEED)
@FUZZ_MORE
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_example_profiles(example: dict[str, Any], data: st.DataObject) -> None:
    _mutated(example, data)


@FUZZ_MORE
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_example_profiles_new_cases(example: dict[str, Any], data: st.DataObject) -> None:
    _mutated(example, data)
