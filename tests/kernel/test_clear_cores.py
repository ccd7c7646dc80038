"""Exclusive cores kept clear of device interrupts and unbound kernel work on a real
kernel, and given back on exit, and by `nxrd restore-host` after a SIGKILL. (The slices
need systemd as PID 1: scripts/vm-systemd.sh checks those, with stress-ng.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from nxrd.model.units import parse_cpu_list, parse_cpu_mask
from tests.kernel.test_daemon import Nxrd

NXRD = str(Path(sys.executable).parent / "nxrd")
PROFILE = '[workloads.lc]\ncommand = ["sleep", "600"]\nclass = "latency-critical"\ncpus = 1\n'
WORKQUEUE = Path("/sys/devices/virtual/workqueue/cpumask")


def affinities() -> dict[str, frozenset[int]]:
    out = {}
    for d in Path("/proc/irq").glob("[0-9]*"):
        try:
            out[d.name] = parse_cpu_list((d / "smp_affinity_list").read_text().strip())
        except OSError:
            continue
    return out


def test_interrupts_and_workqueues_leave_the_exclusive_core_and_come_back(
    tmp_path: Path, cgroup_root: Path
) -> None:
    before, mask = affinities(), WORKQUEUE.read_text().strip()
    d = Nxrd(tmp_path, PROFILE, cgroup_root).start()
    try:
        d.wait_for(lambda: any("kept clear" in e[2] for e in d.events("nxrd")))
        said = next(e[2] for e in d.events("nxrd") if "kept clear" in e[2])
        core = int(said.split()[2])  # "exclusive cores N kept clear: ..."
        saved = json.loads((d.state / "host.json").read_text())
        assert {k: parse_cpu_list(v) for k, v in saved["irqs"].items()} == before
        now = affinities()
        moved = [irq for irq in now if core in before[irq] and core not in now[irq]]
        stayed = [irq for irq in now if core in now[irq]]
        # what the kernel kept in place is said, by number; everything else moved
        assert moved and all(irq in said for irq in stayed), (said, stayed)
        assert core not in parse_cpu_mask(WORKQUEUE.read_text())
        assert core not in parse_cpu_mask(Path("/proc/irq/default_smp_affinity").read_text())
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        assert core not in parse_cpu_mask(WORKQUEUE.read_text())  # nobody gave it back yet
        # the unit's ExecStopPost=: gives back what host.json saved, after a crash too
        r = subprocess.run(
            [NXRD, "--state-dir", str(d.state), "restore-host"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert affinities() == before and WORKQUEUE.read_text().strip() == mask
        assert not (d.state / "host.json").exists()
        # a restarted nxrd moves them again, and its clean exit gives them back
        d.start()
        d.wait_for(lambda: (d.state / "host.json").exists() and affinities() != before)
        # at once: nxrd may still be starting (adopting lc), and must still exit cleanly
        assert d.stop() == 0
    finally:
        d.stop()
    assert affinities() == before and WORKQUEUE.read_text().strip() == mask
