"""The plan's JSON form (docs/plan-json.md) stays byte for byte what it was: plans of the
example and fixture profiles, recorded before the plan became typed, are made again and
compared whole; each also reads back into a typed plan that writes the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.model.plan import Plan
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
RECORDED = sorted((ROOT / "tests/fixtures/plans").glob("*.json"))


def profile_path(stem: str) -> Path:
    for folder in (ROOT / "profiles", ROOT / "tests/fixtures/profiles"):
        if (folder / f"{stem}.toml").exists():
            return folder / f"{stem}.toml"
    raise FileNotFoundError(stem)


def test_there_are_recorded_plans_of_every_kind() -> None:
    names = {p.stem.split("@")[0] for p in RECORDED}
    assert {"demo", "cpu-inference", "gpu-two-models", "small", "one-gpu"} <= names


@pytest.mark.parametrize("recorded", RECORDED, ids=[p.stem for p in RECORDED])
def test_the_plan_json_is_byte_for_byte_the_recorded_one(recorded: Path) -> None:
    stem, topology = recorded.stem.split("@")
    path = profile_path(stem)
    topo = load_topology(ROOT / "tests/fixtures/topologies" / f"{topology}.json")
    plan = make_plan(load_profile(str(path)), topo, path.name)
    assert plan.to_json() == recorded.read_text()


@pytest.mark.parametrize("recorded", RECORDED, ids=[p.stem for p in RECORDED])
def test_a_recorded_plan_reads_back_typed_and_writes_the_same_bytes(recorded: Path) -> None:
    text = recorded.read_text()
    plan = Plan.model_validate_json(text)
    assert plan.to_json() == text
    for wl in plan.workloads:
        assert wl.values.render() == wl.files
