from __future__ import annotations

from pathlib import Path

from nxrd.profile.docs import generate
from nxrd.profile.model import Workload

ROOT = Path(__file__).resolve().parents[2]


def test_profile_reference_is_current() -> None:
    on_disk = (ROOT / "docs/profiles.md").read_text()
    assert on_disk == generate(), (
        "docs/profiles.md is stale: python -m nxrd.profile.docs > docs/profiles.md"
    )


def test_every_workload_key_is_documented() -> None:
    text = generate()
    for name, field in Workload.model_fields.items():
        assert f"| `{field.alias or name}` |" in text
        assert field.description, name
