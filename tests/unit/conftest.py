from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nxrd.model.topology import Topology, load_topology

if TYPE_CHECKING:
    from nxrd.daemon.core import Daemon
    from nxrd.kernel.fake_host import FakeHost

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


def start_daemon(tmp_path: Path, host: FakeHost, profile: str) -> Daemon:
    """nxrd started on a fake host with this profile; its state and socket in tmp_path."""
    from nxrd.daemon.core import Daemon

    (tmp_path / "p.toml").write_text(profile)
    d = Daemon(
        [str(tmp_path / "p.toml")],
        str(tmp_path / "state"),
        socket_path=str(tmp_path / "nxrd.sock"),
        host=host,
    )
    d.start()
    return d
