"""Kept-open reads see new contents, survive the file being replaced, and let go of a
stopped workload's cgroup."""

from __future__ import annotations

from pathlib import Path

from nxrd.kernel.counters import KeptOpen


def test_rereads_and_reopens(tmp_path: Path) -> None:
    f = str(tmp_path / "cpu.pressure")
    k = KeptOpen()
    assert k.read(f) is None
    Path(f).write_text("some avg10=1.00\n")
    assert k.read(f) == "some avg10=1.00\n"
    with open(f, "r+") as w:  # rewritten in place, as the kernel updates the file
        w.write("some avg10=2.00\n")
    assert k.read(f) == "some avg10=2.00\n"
    assert len(k.fds) == 1
    k.close()
    assert k.fds == {}


def test_a_stopped_workloads_files_are_closed(tmp_path: Path) -> None:
    """Kept open, a removed cgroup's file would keep the cgroup alive in the kernel."""
    for leaf in ("batch/embed", "batch/embed2"):
        (tmp_path / leaf).mkdir(parents=True)
        for name in ("cpu.stat", "cpu.pressure"):
            (tmp_path / leaf / name).write_text("x\n")
    k = KeptOpen()
    for leaf in ("batch/embed", "batch/embed2"):
        for name in ("cpu.stat", "cpu.pressure"):
            assert k.read(f"{tmp_path}/{leaf}/{name}") == "x\n"
    k.forget_under(f"{tmp_path}/batch/embed")
    assert sorted(k.fds) == [f"{tmp_path}/batch/embed2/{n}" for n in ("cpu.pressure", "cpu.stat")]
    k.close()
