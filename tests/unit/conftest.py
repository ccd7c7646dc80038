from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.model.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "tests/fixtures/topologies"


@pytest.fixture
def vm2() -> Topology:
    return load_topology(TOPOLOGIES / "vm-2cpu.json")


@pytest.fixture
def smt16() -> Topology:
    return load_topology(TOPOLOGIES / "smt16-1gpu.json")


@pytest.fixture
def socket2() -> Topology:
    return load_topology(TOPOLOGIES / "2socket-8gpu.json")
