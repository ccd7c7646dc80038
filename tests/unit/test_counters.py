"""Kept-open reads see new contents and survive the file being replaced."""

from __future__ import annotations

from pathlib import Path

from nxrd.kernel.counters import KeptOpen


def test_rereads_and_reopens(tmp_path: Path) -> None:
    f = tmp_path / "cpu.pressure"
    k = KeptOpen()
    assert k.read(f) is None
    f.write_text("some avg10=1.00\n")
    assert k.read(f) == "some avg10=1.00\n"
    with f.open("r+") as w:  # rewritten in place, as the kernel updates the file
        w.write("some avg10=2.00\n")
    assert k.read(f) == "some avg10=2.00\n"
    assert len(k.fds) == 1
    k.close()
    assert k.fds == {}
