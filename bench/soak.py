"""Fault-injection soak: kill -9 of nxrd at random moments, then a new nxrd takes over.

    bash scripts/vm-run.sh 'SOAK_SEED=2 .venv/bin/python -u bench/soak.py 25'   # in the VM
    # 100 rounds outlast the VM's 40-minute limit: run 25 at a time with seeds 2, 3, 4, 5

A real nxrd supervises four workloads under load (a latency pusher, a CPU-bound batch
loop, two sleepers). Each round picks a moment: mid-apply (a changed profile POSTed with
curl), mid-reload (the profile file changed, then SIGHUP), mid-restart of a workload, or
idle; waits a random 0-300 ms after it began, and kills nxrd with SIGKILL. A new nxrd
starts on the same state directory and must take every workload over.

Per round it checks, against the processes the kernel shows:
  lost        a workload not running (in its leaf) once the new nxrd has settled
  restarted   a workload whose main process changed though nobody asked (the workload an
              operator was restarting in that round may change)
  duplicated  a leaf with more processes than the workload runs, or its command running
              outside its leaf
  left behind a cgroup in nxrd's subtree that the plan does not have
and the time the new nxrd took: from its exec to every workload adopted (as the API
answers; in the emulated VM this is mostly Python's start-up) and nxrd's own start
(from its "started in N ms" event). Targets: 0 lost, 0 restarted, 0 duplicated, 0 left
behind, re-adoption <= 1 s p99.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEED = int(os.environ.get("SOAK_SEED", "1"))
BIN = Path(sys.executable).parent
PY = sys.executable

PUSHER = (
    "import time; from nxrd.latency import LatencyReporter; r = LatencyReporter()\n"
    "while True:\n    r(0.01); time.sleep(0.05)"
)
BURNER = "while True: pass"


def profile(variant: int) -> str:
    """Two variants that differ in cgroup values only: applying one writes the tree live
    and restarts nothing."""
    memory = ("384M", "512M")[variant]
    weight = ("50", "80")[variant]
    return f"""
[workloads.chat]
command = {json.dumps([PY, "-c", PUSHER])}
class = "latency-critical"
cpus = 1
slo = {{p99 = "200ms", window = "1s", source = {{push = true}}}}

[workloads.embed]
command = {json.dumps([PY, "-c", BURNER])}
class = "batch"
memory_max = "{memory}"
cpu_weight = {weight}

[workloads.indexer]
command = ["sleep", "7801"]
class = "background"

[workloads.web]
command = ["sleep", "7802"]
"""


WORKLOADS = ("chat", "embed", "indexer", "web")
MARKERS = {"indexer": "sleep 7801", "web": "sleep 7802", "embed": BURNER}


class Soak:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = Path(f"/sys/fs/cgroup/nxr-soak-{uuid.uuid4().hex[:6]}")
        self.profile_file = tmp / "profile.toml"
        self.profile_file.write_text(profile(0))
        self.state = tmp / "state"
        self.socket = tmp / "nxrd.sock"
        self.log = tmp / "nxrd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        argv = [str(BIN / "nxrd"), "--profile", str(self.profile_file)]
        argv += ["--state-dir", str(self.state), "--socket", str(self.socket)]
        argv += ["--cgroup-root", str(self.root)]
        err = self.log.open("ab")
        began = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, umask=0o077)
        return began

    def api(self, method: str, path: str, data: str | None = None) -> dict[str, object]:
        argv = ["curl", "-sS", "-m", "10", "--unix-socket", str(self.socket), "-X", method]
        argv += ["--data-binary", data] if data is not None else []
        out = subprocess.run(
            [*argv, f"http://localhost/v1/{path}"], capture_output=True, text=True, check=False
        )
        try:
            answer = json.loads(out.stdout)
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def states(self) -> dict[str, tuple[str, int | None]]:
        body = self.api("GET", "workloads")
        rows = body.get("workloads", [])
        assert isinstance(rows, list)
        return {w["name"]: (w["state"], w.get("pid")) for w in rows}

    def settled(self, timeout: float = 60) -> dict[str, int] | None:
        """Main pids once every workload is ready, or None at the timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"nxrd exited {self.proc.returncode}:\n{self.log.read_text()}")
            states = self.states() if self.socket.exists() else {}
            if len(states) == len(WORKLOADS) and all(s == "ready" for s, _ in states.values()):
                return {name: int(pid or 0) for name, (_, pid) in states.items()}
            time.sleep(0.05)
        return None

    def leaves(self) -> dict[str, Path]:
        return {w: next(self.root.glob(f"*/{w}"), self.root / "missing" / w) for w in WORKLOADS}

    def dirs(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_dir()}

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def procs(leaf: Path) -> list[int]:
    try:
        return [int(p) for p in (leaf / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def running_outside(marker: str, leaf: Path) -> int:
    inside = set(procs(leaf))
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return sum(1 for p in found.split() if int(p) not in inside and int(p) != os.getpid())


def started_ms(log: Path, since: int) -> float | None:
    text = log.read_text()[since:]
    found = re.findall(r"started in (\d+) ms", text)
    return float(found[-1]) if found else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rng = random.Random(SEED)
    tmp = Path(tempfile.mkdtemp(prefix="nxr-soak-"))
    s = Soak(tmp)
    s.start()
    pids = s.settled()
    if pids is None:
        raise SystemExit(f"the workloads never became ready:\n{s.log.read_text()}")
    expected_dirs = s.dirs()
    counts = {"lost": 0, "restarted": 0, "duplicated": 0, "left behind": 0}
    moments: dict[str, int] = {}
    adopt_s: list[float] = []
    own_ms: list[float] = []
    variant = 0
    try:
        for i in range(rounds):
            moment = rng.choice(["apply", "reload", "restart", "idle"])
            moments[moment] = moments.get(moment, 0) + 1
            restarting = None
            if moment == "apply":
                variant ^= 1
                body = json.dumps({"files": [{"name": "soak.toml", "text": profile(variant)}]})
                cmd = ["curl", "-sS", "-m", "10", "--unix-socket", str(s.socket), "-X", "POST"]
                cmd += ["--data-binary", body, "http://localhost/v1/apply"]
                helper = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif moment == "reload":
                variant ^= 1
                s.profile_file.write_text(profile(variant))
                assert s.proc is not None
                s.proc.send_signal(signal.SIGHUP)
                helper = None
            elif moment == "restart":
                restarting = rng.choice(["indexer", "web"])
                cmd = ["curl", "-sS", "-m", "10", "--unix-socket", str(s.socket), "-X", "POST"]
                cmd += [f"http://localhost/v1/workloads/{restarting}/restart"]
                helper = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                helper = None
            time.sleep(rng.uniform(0.0, 0.3))
            s.kill()
            if helper is not None:
                helper.wait()
            log_size = len(s.log.read_text())
            began = s.start()
            now = s.settled()
            if now is None:
                counts["lost"] += sum(1 for st, _ in s.states().values() if st != "ready") or len(
                    WORKLOADS
                )
                print(f"round {i}: {moment}: not settled; nxrd said:\n{s.log.read_text()[-2000:]}")
                pids = {w: 0 for w in WORKLOADS}
                continue
            adopt_s.append(time.monotonic() - began)
            if (ms := started_ms(s.log, log_size)) is not None:
                own_ms.append(ms)
            print(f"round {i}: {moment}: all adopted {adopt_s[-1]:.1f} s after exec", flush=True)
            for w in WORKLOADS:
                if now[w] != pids[w] and w != restarting:
                    counts["restarted"] += 1
                    print(f"round {i}: {moment}: {w} restarted ({pids[w]} -> {now[w]})")
            leaves = s.leaves()
            for w, leaf in leaves.items():
                in_leaf = procs(leaf)
                if now[w] not in in_leaf:
                    counts["lost"] += 1
                    print(f"round {i}: {moment}: {w} pid {now[w]} not in {leaf}: {in_leaf}")
                if len(in_leaf) > 1 or (w in MARKERS and running_outside(MARKERS[w], leaf)):
                    counts["duplicated"] += 1
                    print(f"round {i}: {moment}: {w} duplicated: {in_leaf}")
            extra = s.dirs() - expected_dirs
            if extra:
                counts["left behind"] += len(extra)
                print(f"round {i}: {moment}: cgroups left behind: {sorted(extra)}")
            pids = now
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)  # nxrd stops its workloads
            s.proc.wait(timeout=120)
        if s.root.exists():
            subprocess.run(["find", str(s.root), "-depth", "-type", "d", "-delete"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nsoak: {rounds} kill -9 of nxrd (seed {SEED}); moments: {json.dumps(moments)}")
    for key, n in counts.items():
        print(f"  {'cgroups' if key == 'left behind' else 'workloads'} {key}: {n}")
    if adopt_s:
        print(
            f"  exec to all adopted (API): p50 {statistics.median(adopt_s):.2f} s,"
            f" p99 {pct(adopt_s, 0.99):.2f} s, max {max(adopt_s):.2f} s (n={len(adopt_s)})"
        )
    if own_ms:
        print(
            f"  nxrd's own start (its 'started in' event): p50 {statistics.median(own_ms):.0f} ms,"
            f" p99 {pct(own_ms, 0.99):.0f} ms, max {max(own_ms):.0f} ms"
        )


if __name__ == "__main__":
    main()
