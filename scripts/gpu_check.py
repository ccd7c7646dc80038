"""Check nxr's GPU discovery and injected GPU environment on a host with NVIDIA GPUs.

    python3 scripts/gpu_check.py [OUTDIR]

Discovers the host (NVML), plans tests/fixtures/profiles/one-gpu.toml for it, then starts
a process per workload with the plan's environment and asks CUDA (through PyTorch, if
installed) which GPUs it sees. Then, as root on a host where `nxrd check` passes, runs a
real nxrd: a workload given GPU 0 holds 1 GiB on it (PyTorch), and a workload given no GPU
tries to open every /dev/nvidiaN; the check wants nxrctl to attribute the 1 GiB to the
first and the device filter to refuse the second (EPERM). Not part of CI: CI machines have
no GPU.
"""

from __future__ import annotations

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
from nxrd.plan import make_plan  # noqa: E402
from nxrd.profile import load_profile  # noqa: E402

PROBE = (
    "import json, torch; n = torch.cuda.device_count(); "
    "print(json.dumps([str(torch.cuda.get_device_properties(i).uuid) for i in range(n)]))"
)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nxr-gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    topo = discover()
    print(topology_text(topo))
    (out / "topology.json").write_text(topo.to_json())
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
    if os.geteuid() != 0 or subprocess.run([_bin("nxrd"), "check"]).returncode != 0:
        print("live check skipped: needs root and a host where `nxrd check` passes")
        return 0 if ok else 1
    return 0 if live(out) and ok else 1


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


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def live(out: Path) -> bool:
    """A real nxrd: per-process GPU memory attributed, other GPUs' nodes refused."""
    held, opened = out / "held", out / "opened.json"
    for f in (held, opened):
        f.unlink(missing_ok=True)
    profile = out / "live.toml"
    profile.write_text(
        "[workloads.holder]\n"
        f"command = {json.dumps([sys.executable, '-c', HOLD, str(held)])}\n"
        'class = "batch"\ngpus = 1\ngpu_memory = "2G"\n\n'
        "[workloads.nogpu]\n"
        f"command = {json.dumps([sys.executable, '-c', OPEN, str(opened)])}\n"
        'class = "batch"\n'
    )
    sock = out / "nxrd.sock"
    log = (out / "nxrd.log").open("wb")
    argv = [_bin("nxrd"), "--profile", str(profile), "--state-dir", str(out / "state")]
    nxrd = subprocess.Popen([*argv, "--socket", str(sock)], stdout=log, stderr=log)
    try:
        deadline, show = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            r = subprocess.run(
                [_bin("nxrctl"), "--socket", str(sock), "show", "holder", "-o", "json"],
                capture_output=True,
                text=True,
            )
            show = json.loads(r.stdout) if r.returncode == 0 else {}
            if held.exists() and opened.exists() and (show.get("gpu_memory_bytes") or 0) >> 30:
                break
            time.sleep(1)
        used = show.get("gpu_memory_bytes") or 0
        refused = json.loads(opened.read_text()) if opened.exists() else {}
        print(f"holder: held={held.exists()} gpu_memory_bytes={used} {show.get('gpu_usage')}")
        print(f"nogpu: opening /dev/nvidiaN -> {refused}")
        ok = used >= 1 << 30 and bool(refused) and set(refused.values()) == {"EPERM"}
        print("live:", "ok" if ok else "FAILED (see nxrd.log)")
        return ok
    finally:
        nxrd.send_signal(signal.SIGTERM)
        nxrd.wait(120)


if __name__ == "__main__":
    sys.exit(main())
