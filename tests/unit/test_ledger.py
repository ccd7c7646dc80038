"""Who changed a cgroup value last, and why; kept across nxrd restarts."""

from __future__ import annotations

from pathlib import Path

from nxrd.ledger import Ledger, Write


def test_the_last_change_and_its_cause_are_kept(tmp_path: Path) -> None:
    now = [100.0]
    ledger = Ledger(lambda: now[0])
    with ledger.because("profile p.toml, at nxrd start"):
        ledger.record("batch/a", "cpu.max", "max 100000")
    now[0] = 200.0
    with ledger.because("nxrctl apply by uid 0 (q.toml)"):
        ledger.record("batch/a", "cpu.max", "50000 100000")
    now[0] = 300.0
    ledger.record("batch/a", "cpu.max", "50000 100000")  # the same value again, at a restart
    assert ledger.cause == "nxrd"
    assert ledger.of("batch/a") == {
        "cpu.max": Write("50000 100000", "nxrctl apply by uid 0 (q.toml)", 200.0)
    }
    path = tmp_path / "ledger.json"
    ledger.save(path)
    again = Ledger(lambda: 0.0)
    again.load(path)
    assert again.last == ledger.last
    path.write_text("[[1, 2]]")  # damaged: an empty ledger, not a crash
    again.load(path)
    assert again.last == {}
