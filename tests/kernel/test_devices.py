"""The cgroup device filter on the real kernel: a workload opens only its own /dev/nvidiaN.

The VM has no NVIDIA driver, so the test makes the device nodes itself (char 195:N on a
fresh tmpfs). Without a driver, opening one fails with ENXIO; the filter's refusal is
EPERM, which the kernel returns before it ever looks for a driver.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.errors import KernelError
from nxrd.kernel import devices
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import LinuxCgroupFS
from nxrd.kernel.discovery import discover
from nxrd.kernel.linux_runtime import LinuxRuntime
from nxrd.kernel.spawn import spawn_in_cgroup
from nxrd.model.topology import Gpu
from nxrd.plan import make_plan
from nxrd.profile import parse_profile

# Opens each path (and makes a node for each "mknod:PATH:MAJOR:MINOR"); prints what happened.
PROBE = textwrap.dedent(
    """
    import errno, json, os, stat, sys
    out = {}
    for arg in sys.argv[1:]:
        try:
            if arg.startswith("mknod:"):
                _, path, major, minor = arg.split(":")
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(int(major), int(minor)))
            else:
                os.close(os.open(arg, os.O_RDWR))
            out[arg] = "ok"
        except OSError as e:
            out[arg] = errno.errorcode[e.errno]
    print(json.dumps(out), flush=True)
    """
)
NODES = {"nvidia0": 0, "nvidia1": 1, "nvidiactl": 255}


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs (device nodes allowed) holding nvidia0, nvidia1 and nvidiactl, char 195:N."""
    path = tmp_path / "dev"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "nxr-test-dev", str(path)], check=True)
    try:
        for name, minor in NODES.items():
            os.mknod(path / name, stat.S_IFCHR | 0o666, os.makedev(195, minor))
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def probe(dev: Path, cgroup: Path | None, *extra: str) -> dict[str, str]:
    """errno name (or "ok") of opening each node, /dev/null and extra, from inside cgroup."""
    argv = [sys.executable, "-c", PROBE, *(str(dev / n) for n in NODES), "/dev/null", *extra]
    if cgroup is None:
        out = subprocess.run(argv, capture_output=True, check=True).stdout
    else:
        proc = spawn_in_cgroup(argv, cgroup, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
    got: dict[str, str] = json.loads(out)
    return {Path(k).name if k.startswith(str(dev)) else k: v for k, v in got.items()}


def attached(cgroup: Path) -> list[int]:
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return devices._attached(fd)
    finally:
        os.close(fd)


def test_only_the_given_gpu_can_be_opened(scratch: Path, dev: Path) -> None:
    assert devices.support() is None
    leaf = scratch / "model"
    leaf.mkdir()
    devices.restrict_gpus(leaf, [0])
    assert len(attached(leaf)) == 1
    inside = probe(dev, leaf, f"mknod:{dev}/n0:195:0", f"mknod:{dev}/n1:195:1")
    # No driver: ENXIO for what the filter lets through, EPERM for what it refuses.
    assert inside == {
        "nvidia0": "ENXIO",
        "nvidia1": "EPERM",
        "nvidiactl": "ENXIO",
        "/dev/null": "ok",
        f"mknod:{dev}/n0:195:0": "ok",
        f"mknod:{dev}/n1:195:1": "EPERM",
    }
    outside = probe(dev, None)
    assert outside == {
        "nvidia0": "ENXIO",
        "nvidia1": "ENXIO",
        "nvidiactl": "ENXIO",
        "/dev/null": "ok",
    }


def test_a_new_filter_replaces_the_old_one(scratch: Path, dev: Path) -> None:
    leaf = scratch / "model"
    leaf.mkdir()
    devices.restrict_gpus(leaf, [0])
    first = attached(leaf)
    devices.restrict_gpus(leaf, [1])  # the profile now gives it GPU 1 instead
    second = attached(leaf)
    assert len(second) == 1 and second != first
    assert probe(dev, leaf)["nvidia0"] == "EPERM"
    assert probe(dev, leaf)["nvidia1"] == "ENXIO"
    devices.restrict_gpus(leaf, [])  # and then none
    assert len(attached(leaf)) == 1
    got = probe(dev, leaf)
    assert (got["nvidia0"], got["nvidia1"], got["nvidiactl"]) == ("EPERM", "EPERM", "ENXIO")


def test_a_program_the_verifier_refuses_is_one_line_saying_why() -> None:
    exit_only = bytes([0x95]) + bytes(7)  # returns r0 without setting it
    with pytest.raises(KernelError) as e:
        devices._load(exit_only)
    assert str(e.value) == "cgroup device filter: the verifier refused it: R0 !read_ok"


def test_not_a_cgroup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KernelError) as e:
        devices.restrict_gpus(tmp_path, [0])
    assert str(e.value) == (
        f"cgroup device filter for {tmp_path}: "
        "not a cgroup v2 directory, or the kernel lacks CONFIG_CGROUP_BPF"
    )


def test_workloads_launched_by_nxrd_see_only_their_gpus(
    scratch: Path, dev: Path, tmp_path: Path
) -> None:
    # The VM has no GPU: plan for its CPUs plus two GPUs that exist only as these nodes.
    topo = discover(gpus=False).model_copy(
        update={"gpus": [Gpu(index=0, uuid="GPU-fake-0"), Gpu(index=1, uuid="GPU-fake-1")]}
    )
    command = json.dumps([sys.executable, "-c", PROBE, *(str(dev / n) for n in NODES)])
    text = (
        f"[workloads.model]\ncommand = {command}\ngpus = [1]\n"
        f"[workloads.cpu-only]\ncommand = {command}\n"
    )
    profile = parse_profile(text)
    plan = make_plan(profile, topo)
    fs = LinuxCgroupFS(scratch)
    apply_plan(plan, fs)
    rt = LinuxRuntime(fs, tmp_path / "state", gpus=topo.gpus)
    seen = {}
    for wl in plan.workloads:
        rt.ensure_cgroup(wl)
        started = rt.launch(wl, profile.workloads[wl.name])
        deadline = time.monotonic() + 60
        while rt.ended(wl.name, started.shim_pid) is None:
            assert time.monotonic() < deadline, f"{wl.name} did not finish"
            time.sleep(0.05)
        line = rt.log_file(wl.name).read_text().splitlines()[-1]
        got = json.loads(line.split(" ", 1)[1])
        seen[wl.name] = {Path(k).name: v for k, v in got.items()}
    assert seen["model"] == {"nvidia0": "EPERM", "nvidia1": "ENXIO", "nvidiactl": "ENXIO"}
    assert seen["cpu-only"] == {"nvidia0": "EPERM", "nvidia1": "EPERM", "nvidiactl": "ENXIO"}
