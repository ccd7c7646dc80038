"""Check nxr's GPU discovery and injected GPU environment on a host with NVIDIA GPUs.

    python3 scripts/gpu_check.py [OUTDIR]

Discovers the host (NVML), plans tests/fixtures/profiles/one-gpu.toml for it, then starts
a process per workload with the plan's environment and asks CUDA (through PyTorch, if
installed) which GPUs it sees. Not part of CI: CI machines have no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nxrd.cli.format import topology_text  # noqa: E402
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
    plan = make_plan(load_profile(ROOT / "tests/fixtures/profiles/one-gpu.toml"), topo)
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
