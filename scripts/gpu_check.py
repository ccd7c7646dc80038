"""Check nxr's GPU discovery, environment and accounting on a host with NVIDIA GPUs.

    python3 scripts/gpu_check.py [OUTDIR] [--cgroup-root PATH]

1. Discovers the host (NVML), plans tests/fixtures/profiles/one-gpu.toml for it, then starts
   a process per workload with the plan's environment and asks CUDA (through PyTorch) which
   GPUs it sees.
2. Starts a process that holds 1 GiB on GPU 0 and reads NVML's per-process list with nxrd's
   own reader: the 1 GiB must be found under that process's PID. Needs no cgroup, so it
   runs in containers where nxrd cannot isolate anything, and it shows whether NVML's PIDs
   are the ones this PID namespace sees.
3. As root on a host where `nxrd check` passes, runs a real nxrd: a workload given GPU 0
   holds 1 GiB on it, and a workload given no GPU tries to open every /dev/nvidiaN; the
   check wants `nxrctl show` to attribute the 1 GiB to the first and the device filter to
   refuse the second (EPERM).

Exits 0 when every part that ran passed. Not part of CI: CI machines have no GPU; the
kernel tier runs this script against a stand-in driver (tests/kernel/standin).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nxrd.cli.format import topology_text  # noqa: E402
from nxrd.errors import PlanError  # noqa: E402
from nxrd.kernel.discovery import discover  # noqa: E402
from nxrd.kernel.gpu_usage import GpuAccounting  # noqa: E402
from nxrd.model.topology import Gpu  # noqa: E402
from nxrd.plan import make_plan  # noqa: E402
from nxrd.profile import load_profile  # noqa: E402

GIB = 1 << 30
PROBE = (
    "import json, torch; n = torch.cuda.device_count(); "
    "print(json.dumps([str(torch.cuda.get_device_properties(i).uuid) for i in range(n)]))"
)
HOLD = (
    "import sys, time, torch; x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda'); "
    "torch.cuda.synchronize(); open(sys.argv[1], 'w').write('held'); time.sleep(600)"
)
OPEN = (
    "import errno, glob, json, os, sys, time; r = {}\n"
    "for d in sorted(glob.glob('/dev/nvidia[0-9]*')):\n"
    "    try: os.close(os.open(d, os.O_RDWR)); r[d] = 'opened'\n"
    "    except OSError as e: r[d] = errno.errorcode.get(e.errno, str(e.errno))\n"
    "open(sys.argv[1], 'w').write(json.dumps(r)); time.sleep(600)"
)


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("out", nargs="?", default="/tmp/nxr-gpu-check", type=Path)
    args.add_argument("--cgroup-root", help="the cgroup the live nxrd owns (its --cgroup-root)")
    opts = args.parse_args()
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    topo = discover()
    print(topology_text(topo))
    (out / "topology.json").write_text(topo.to_json())
    if not topo.gpus:
        print("gpu_check: NVML found no GPU")
        return 2
    try:
        plan = make_plan(load_profile(ROOT / "tests/fixtures/profiles/one-gpu.toml"), topo)
    except PlanError as e:
        print(f"gpu_check: this host does not fit the check's profile: {e}")
        return 2
    (out / "plan.json").write_text(plan.to_json())
    ok = True
    for wl in plan.workloads:
        env = {**os.environ, **wl.env}
        r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{wl.name}: probe failed: {r.stderr.strip().splitlines()[-1:]}")
            ok = False
            continue
        seen = ["GPU-" + u for u in json.loads(r.stdout)]
        want = [g.uuid for g in wl.gpus]
        verdict = "ok" if seen == want else "MISMATCH"
        ok &= seen == want
        print(
            f"{wl.name}: CUDA_VISIBLE_DEVICES={wl.env.get('CUDA_VISIBLE_DEVICES')!r} "
            f"cpus={wl.cpus} -> CUDA sees {seen} (planned {want}) {verdict}"
        )
    ok &= attributed(topo.gpus[0], out)
    if os.geteuid() != 0 or subprocess.run([_bin("nxrd"), "check"]).returncode != 0:
        print("live check skipped: needs root and a host where `nxrd check` passes")
        return 0 if ok else 1
    return 0 if live(out, opts.cgroup_root) and ok else 1


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return path.exists()


def attributed(gpu: Gpu, out: Path) -> bool:
    """nxrd's NVML reader finds the 1 GiB a plain process holds on gpu under its PID."""
    held = out / "held-plain"
    held.unlink(missing_ok=True)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu.uuid}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(held)], env=env)
    try:
        if not _wait_for(held, holder, 120):
            print(f"attribution: no 1 GiB held on GPU {gpu.index} (exit {holder.poll()})")
            return False
        acct = GpuAccounting([gpu])
        doc: dict[str, object] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # NVML lists a new context within a poll or two
            acct.poll(lambda pid: "holder" if pid == holder.pid else None)
            doc = acct.workload("holder", [gpu.index], running=True)
            if int(doc.get("gpu_memory_bytes") or 0) >= GIB:
                break
            time.sleep(1)
        used = int(doc.get("gpu_memory_bytes") or 0)
        print(
            f"attribution: holder pid {holder.pid} -> {doc.get('gpu_usage', doc)}; "
            f"outside it: {acct.host()}"
        )
        if used < GIB:
            print(
                "attribution: FAILED: NVML did not list 1 GiB under the holder's PID "
                "(a PID from another namespace appears under 'other_pids')"
            )
        return used >= GIB
    finally:
        holder.kill()
        holder.wait()


def live(out: Path, cgroup_root: str | None) -> bool:
    """A real nxrd: per-process GPU memory attributed, other GPUs' nodes refused."""
    held, opened = out / "held", out / "opened.json"
    for f in (held, opened):
        f.unlink(missing_ok=True)
    # nxrd gives workloads a clean environment; they import what this interpreter does.
    path = os.environ.get("PYTHONPATH")
    env = f"{{ PYTHONPATH = {json.dumps(path)} }}" if path else "{}"
    profile = out / "live.toml"
    profile.write_text(
        "[workloads.holder]\n"
        f"command = {json.dumps([sys.executable, '-c', HOLD, str(held)])}\n"
        f'class = "batch"\ngpus = 1\ngpu_memory = "2G"\nenv = {env}\n\n'
        "[workloads.nogpu]\n"
        f"command = {json.dumps([sys.executable, '-c', OPEN, str(opened)])}\n"
        f'class = "batch"\nenv = {env}\n'
    )
    sock = out / "nxrd.sock"
    log = (out / "nxrd.log").open("wb")
    argv = [_bin("nxrd"), "--profile", str(profile), "--state-dir", str(out / "state")]
    argv += ["--socket", str(sock)] + (["--cgroup-root", cgroup_root] if cgroup_root else [])
    nxrd = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        deadline, show = time.monotonic() + 120, {}
        while time.monotonic() < deadline and nxrd.poll() is None:
            r = subprocess.run(
                [_bin("nxrctl"), "--socket", str(sock), "show", "holder", "-o", "json"],
                capture_output=True,
                text=True,
            )
            show = json.loads(r.stdout) if r.returncode == 0 else {}
            if held.exists() and opened.exists() and (show.get("gpu_memory_bytes") or 0) >= GIB:
                break
            time.sleep(1)
        used = show.get("gpu_memory_bytes") or 0
        refused = json.loads(opened.read_text()) if opened.exists() else {}
        print(f"holder: held={held.exists()} gpu_memory_bytes={used} {show.get('gpu_usage')}")
        print(f"nogpu: opening /dev/nvidiaN -> {refused}")
        ok = used >= GIB and bool(refused) and set(refused.values()) == {"EPERM"}
        print("live:", "ok" if ok else "FAILED (see nxrd.log)")
        return ok
    finally:
        nxrd.send_signal(signal.SIGTERM)
        nxrd.wait(120)


if __name__ == "__main__":
    sys.exit(main())
