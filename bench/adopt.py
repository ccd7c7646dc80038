"""How long workloads go unsupervised after nxrd dies, at this machine's own speed.

    .venv/bin/python bench/adopt.py [ROUNDS]

The soak (bench/soak.py) proves adoption on a real kernel, but in a VM that emulates its
CPU, where Python runs some 30 times slower than here. This bench times the same path on
this host's CPU: each round is a fresh interpreter, as after a crash, that imports what nxrd
imports, then takes over the soak's four workloads left running by a first nxrd (on the fake
kernel of the unit tests: state file, shim records and leaves as the real ones would show
them). Printed: exec to imported, the adoption itself (Daemon.start, which ends when the API
answers), and their sum, p50 and p99. Kernel I/O is faked, so its cost is not in these
figures; the soak's "own start" in the VM includes it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--child" else 50


def child(began: float, tmp: Path) -> None:
    # What a real nxrd imports before it can adopt (the command, the daemon, the Linux host).
    import nxrd.daemon.command
    import nxrd.kernel.host
    import nxrd.kernel.linux_runtime  # noqa: F401
    from nxrd.daemon.core import Daemon

    imported = time.monotonic()
    from bench.soak import WORKLOADS, profile
    from nxrd.kernel.fake_host import FakeHost
    from nxrd.model.topology import load_topology

    host = FakeHost(load_topology(REPO / "tests/fixtures/topologies/vm-2cpu.json"))
    (tmp / "p.toml").write_text(profile(0))

    def start() -> Daemon:
        return Daemon(
            [str(tmp / "p.toml")],
            str(tmp / "state"),
            socket_path=str(tmp / "nxrd.sock"),
            host=host,
        )

    first = start()
    first.start()
    first.sup.tick(0.0)
    first.step(1.0, stopping=False)  # writes the state file
    first.close(leave=True)
    for rec in first.sup.records.values():
        assert rec.pid is not None, rec.name
        status = first.runtime.status_file(rec.name)
        host.statuses[status] = {"pid": rec.pid, "shim_pid": rec.shim_pid}
        host.fs.dirs[rec.plan.cgroup]["cgroup.procs"] = f"{rec.pid}\n"

    t0 = time.monotonic()
    second = start()
    second.start()
    took = time.monotonic() - t0
    adopted = [n for n in WORKLOADS if second.sup.records[n].pid is not None]
    assert len(adopted) == len(WORKLOADS), adopted
    assert host.proc_runtime is not None and not host.proc_runtime.launches, "it started some"
    second.close(leave=True)
    print(json.dumps({"imports": imported - began, "start": took}))


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    rows = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="nxr-adopt-") as tmp:
            began = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
            out = subprocess.run(
                [sys.executable, __file__, "--child", repr(began), tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.splitlines()[-1]))
    print(f"adoption of 4 workloads by a fresh nxrd process, {ROUNDS} rounds, this host's CPU:")
    for key, label in (("imports", "exec to imported"), ("start", "adoption (start)")):
        xs = [r[key] * 1000 for r in rows]
        print(f"  {label:18} p50 {statistics.median(xs):4.0f} ms  p99 {pct(xs, 0.99):4.0f} ms")
    total = [(r["imports"] + r["start"]) * 1000 for r in rows]
    print(f"  {'total':18} p50 {statistics.median(total):4.0f} ms  p99 {pct(total, 0.99):4.0f} ms")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(float(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
