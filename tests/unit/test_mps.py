"""MPS: the planner's client environment, and nxrd running one control daemon per shared GPU
(a fake nvidia-cuda-mps-control that records how it was started)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from nxrd.errors import KernelError, PlanError, ProfileError
from nxrd.kernel.mps import MpsDaemons
from nxrd.plan import Topology, make_plan
from nxrd.profile import parse_profile

SHARED = """
[host]
mps = true

[workloads.a]
command = ["x"]
gpus = [0]
gpu_shared = true
gpu_compute = 30
gpu_memory = "10G"

[workloads.b]
command = ["x"]
gpus = [0]
gpu_shared = true
"""


def test_shared_gpus_under_mps_get_a_daemon_and_their_clients_its_limits(
    socket2: Topology,
) -> None:
    plan = make_plan(parse_profile(SHARED), socket2)
    uuid = socket2.gpus[0].uuid
    assert plan.mps == [uuid]
    env = plan.workload("a").env
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == f"/run/nxr/mps/{uuid}/pipe"
    assert env["CUDA_MPS_LOG_DIRECTORY"] == f"/run/nxr/mps/{uuid}/log"
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10240MB"
    b = plan.workload("b").env
    assert b["CUDA_MPS_PIPE_DIRECTORY"] == env["CUDA_MPS_PIPE_DIRECTORY"]
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in b  # no share asked: the server's default
    without = make_plan(
        parse_profile(
            SHARED.replace("mps = true", "mps = false").replace("gpu_compute = 30\n", "")
        ),
        socket2,
    )
    assert without.mps == [] and "CUDA_MPS_PIPE_DIRECTORY" not in without.workload("a").env


def test_mps_refusals_say_why(socket2: Topology) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(SHARED.replace("mps = true", "mps = false"), "p.toml")
    assert "workloads.a.gpu_compute: needs [host] mps = true (MPS enforces it)" in str(info.value)
    with pytest.raises(ProfileError) as info:
        parse_profile('[workloads.a]\ncommand=["x"]\ngpus=1\ngpu_compute=20\n', "p.toml")
    assert "workloads.a.gpu_compute: only for gpu_shared workloads" in str(info.value)
    two = '[host]\nmps=true\n[workloads.a]\ncommand=["x"]\ngpus=2\ngpu_shared=true\n'
    with pytest.raises(PlanError) as plan_info:
        make_plan(parse_profile(two, "p.toml"), socket2, "p.toml")
    assert plan_info.value.lines() == [
        "p.toml: workloads.a.gpus: under MPS a gpu_shared workload takes one GPU (got 2): "
        "each GPU has its own MPS control daemon"
    ]
    two_users = SHARED + 'user = "svc"\n'  # b's
    with pytest.raises(PlanError) as plan_info:
        make_plan(parse_profile(two_users, "p.toml"), socket2, "p.toml")
    assert plan_info.value.lines() == [
        "p.toml: workloads.b.user: runs as svc, but 'a' on the same MPS GPU runs as nxrd's "
        "user: an MPS server serves one user at a time, so one of them would wait for the "
        "other to exit; run them as one user"
    ]
    same_user = two_users.replace("gpu_memory", 'user = "svc"\ngpu_memory')
    assert make_plan(parse_profile(same_user), socket2).workload("b").gpus[0].index == 0
    # users are compared by UID where nxrd could look them up: root is nxrd's user here
    as_root = SHARED + 'user = "root"\n'
    assert make_plan(parse_profile(as_root), socket2, uids={"": 0, "root": 0}).workload("b")
    with pytest.raises(PlanError):
        make_plan(parse_profile(as_root), socket2, uids={"": 1000, "root": 0})


# -f: record argv and environment, keep a PID file as the real one does, run until killed.
# Anything else is the control client: on "quit", stop the daemon of this pipe directory.
FAKE = f"""#!{sys.executable}
import os, sys, signal, time, json
pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
if sys.argv[1:] == ["-f"]:
    open(os.path.join(pipe, "nvidia-cuda-mps-control.pid"), "w").write(str(os.getpid()))
    with open(os.path.join(os.environ["CUDA_MPS_LOG_DIRECTORY"], "started.json"), "w") as f:
        f.write(json.dumps({{k: v for k, v in os.environ.items() if k.startswith("CUDA")}}) + "\\n")
    while True:
        time.sleep(1)
elif sys.stdin.read().strip() == "quit":
    os.kill(int(open(os.path.join(pipe, "nvidia-cuda-mps-control.pid")).read()), signal.SIGTERM)
"""


@pytest.fixture
def fake_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    prog = bin_dir / "nvidia-cuda-mps-control"
    prog.write_text(FAKE)
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_daemon_per_gpu_restarted_when_it_dies_and_stopped_by_quit(
    fake_control: Path,
) -> None:
    said: list[str] = []
    root = fake_control / "mps"

    def dirs(uuid: str) -> tuple[str, str]:
        return str(root / uuid / "pipe"), str(root / uuid / "log")

    mps = MpsDaemons(said.append, dirs=dirs)
    logs = [root / g / "log/started.json" for g in ("GPU-a", "GPU-b")]
    try:
        mps.ensure(["GPU-a", "GPU-b"])
        wait_for(lambda: all(p.exists() and p.read_text() for p in logs))
        a = json.loads(logs[0].read_text())
        assert a == {
            "CUDA_VISIBLE_DEVICES": "GPU-a",  # its GPU only
            "CUDA_MPS_PIPE_DIRECTORY": f"{root}/GPU-a/pipe",
            "CUDA_MPS_LOG_DIRECTORY": f"{root}/GPU-a/log",
        }
        first = mps.procs["GPU-a"]
        assert not isinstance(first, int)
        first.kill()
        first.wait()
        mps.ensure(["GPU-a", "GPU-b"])
        assert said == ["MPS control daemon for GPU-a exited: started again"]
        second = mps.procs["GPU-a"]
        mps.ensure(["GPU-b"])  # GPU-a no longer shared: its daemon is told to quit
        assert "GPU-a" not in mps.procs
        assert not isinstance(second, int) and second.poll() is not None
        # a new nxrd finds GPU-b's daemon still running and adopts it
        b = mps.procs["GPU-b"]
        wait_for(lambda: (root / "GPU-b/pipe/nvidia-cuda-mps-control.pid").exists())
        again = MpsDaemons(said.append, dirs=dirs)
        again.ensure(["GPU-b"])
        assert not isinstance(b, int) and again.procs["GPU-b"] == b.pid
        assert said[-1] == f"MPS control daemon for GPU-b already running (pid {b.pid}): adopted"
    finally:
        mps.close()
    assert all(not isinstance(p, int) and p.poll() is not None for p in [first, second])


def test_a_missing_control_program_is_one_line(tmp_path: Path) -> None:
    mps = MpsDaemons(lambda m: None, program="no-such-mps-control")
    with pytest.raises(KernelError) as info:
        mps.ensure(["GPU-a"])
    assert str(info.value) == (
        "[host] mps: no-such-mps-control not found (install the NVIDIA compute utilities, "
        "or set mps = false)"
    )
