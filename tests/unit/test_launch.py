"""The launcher on a plain directory standing in for a cgroup (its cgroup.procs is a file).

What the kernel does with the cgroup write is proven in tests/kernel; here: the shim, the
exec, environment, directory, stdin, output capture, exit statuses and errors.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from nxrd.errors import KernelError
from nxrd.kernel.launch import Launched, LaunchSpec, RotatingLog, launch, read_status


def spec(tmp_path: Path, *argv: str, **kw: object) -> LaunchSpec:
    cg = tmp_path / "cg"
    cg.mkdir(exist_ok=True)
    (cg / "cgroup.procs").touch()
    env = {"PATH": os.environ["PATH"], "NXR_TEST": "hello"}
    return LaunchSpec(
        name="w",
        argv=argv,
        cgroup_dir=cg,
        env=env,
        status_file=tmp_path / "run/w.json",
        log_file=tmp_path / "logs/w.log",
        **kw,
    )  # type: ignore[arg-type]


def wait_exit(s: LaunchSpec, timeout: float = 10) -> dict[str, object]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = read_status(s.status_file)
        if st and st.get("exit"):
            return st
        time.sleep(0.02)
    raise AssertionError("no exit recorded")


def reap(run_: Launched) -> None:
    os.waitpid(run_.shim_pid, 0)


def test_runs_with_env_cwd_null_stdin_and_captures_output(tmp_path: Path) -> None:
    code = (
        "import os, sys; print(os.environ['NXR_TEST'], os.getcwd()); "
        "print('err', file=sys.stderr); print(repr(sys.stdin.read()))"
    )
    s = spec(tmp_path, sys.executable, "-u", "-c", code, cwd="/tmp")
    run_ = launch(s)
    st = wait_exit(s)
    reap(run_)
    assert st["pid"] == run_.pid and st["exit"]["code"] == 0  # type: ignore[index]
    lines = [line.split(" ", 1)[1] for line in s.log_file.read_text().splitlines()]
    assert lines == ["hello /tmp", "err", "''"]
    # The workload wrote its own pid into the stand-in cgroup.procs before exec.
    assert (s.cgroup_dir / "cgroup.procs").read_text() == "0"


def test_exit_codes_and_signals_are_recorded(tmp_path: Path) -> None:
    s = spec(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)")
    run_ = launch(s)
    assert wait_exit(s)["exit"]["code"] == 3  # type: ignore[index]
    reap(run_)
    s = spec(tmp_path, "sleep", "30")
    run_ = launch(s)
    os.kill(run_.pid, signal.SIGKILL)
    assert wait_exit(s)["exit"]["signal"] == signal.SIGKILL  # type: ignore[index]
    reap(run_)


def test_the_workload_is_in_its_own_session_apart_from_nxrd(tmp_path: Path) -> None:
    s = spec(tmp_path, "sleep", "30")
    run_ = launch(s)
    try:
        assert os.getsid(run_.pid) == run_.pid != os.getsid(0)
        assert os.getsid(run_.shim_pid) == run_.shim_pid
    finally:
        os.kill(run_.pid, signal.SIGKILL)
        wait_exit(s)
        reap(run_)


def test_exec_failures_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match=r"^cannot start w: program 'no-such-prog' not found"):
        launch(spec(tmp_path, "no-such-prog"))
    (tmp_path / "notexec").write_text("x")
    with pytest.raises(KernelError, match=r"^cannot start w: exec: Permission denied$"):
        launch(spec(tmp_path, str(tmp_path / "notexec")))
    with pytest.raises(KernelError, match=r"no user named 'nobody-here'"):
        launch(spec(tmp_path, "true", user="nobody-here"))
    with pytest.raises(KernelError, match=r"cwd /nonexistent is not a directory"):
        launch(spec(tmp_path, "true", cwd="/nonexistent"))
    s = spec(tmp_path, "true")
    (s.cgroup_dir / "cgroup.procs").unlink()
    with pytest.raises(KernelError, match=r"no cgroup at"):
        launch(s)


def test_drops_to_the_configured_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs as root (the developer and CI machines are root)")
    tmp_path.chmod(0o755)
    s = spec(tmp_path, "sh", "-c", "id -u; id -g", user="nobody", cwd="/")
    run_ = launch(s)
    wait_exit(s)
    reap(run_)
    import pwd

    pw = pwd.getpwnam("nobody")
    lines = [line.split(" ", 1)[1] for line in s.log_file.read_text().splitlines()]
    assert lines == [str(pw.pw_uid), str(pw.pw_gid)]


def test_logs_rotate_by_size(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "w.log", max_bytes=200, backups=2)
    for i in range(30):
        log.write(f"line {i:02d}\n".encode())
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["w.log", "w.log.1", "w.log.2"]
    newest = (tmp_path / "w.log").read_text().splitlines()[-1]
    assert newest.endswith("line 29")
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())


def test_partial_lines_are_joined(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "w.log", max_bytes=1 << 20, backups=1)
    log.write(b"hel")
    log.write(b"lo\nwor")  # the unfinished last line is flushed on close
    log.close()
    assert [line.split(" ", 1)[1] for line in (tmp_path / "w.log").read_text().splitlines()] == [
        "hello",
        "wor",
    ]


def test_a_previous_runs_record_never_passes_for_this_runs_exit(tmp_path: Path) -> None:
    from nxrd.kernel.cgroupfs import LinuxCgroupFS
    from nxrd.kernel.linux_runtime import LinuxRuntime
    from nxrd.kernel.runtime import Ended

    rt = LinuxRuntime(LinuxCgroupFS(tmp_path), tmp_path)
    s = spec(tmp_path, "sh", "-c", "exit 3")
    s = LaunchSpec(**{**s.__dict__, "status_file": rt.status_file("w")})
    first = launch(s)
    wait_exit(s)
    assert rt.ended("w", first.shim_pid) == Ended(3, None)
    s2 = LaunchSpec(**{**s.__dict__, "argv": ("sleep", "30")})
    for _ in range(20):
        second = launch(s2)
        rt.watch(second.shim_pid)
        assert rt.ended("w", second.shim_pid) is None  # running: not the old exit 3
        os.killpg(second.pid, signal.SIGKILL)
        while (got := rt.ended("w", second.shim_pid)) is None:
            time.sleep(0.01)
        assert got == Ended(None, signal.SIGKILL)
    rt.reap()
    time.sleep(0.2)
    rt.reap()
    assert not rt.unreaped
    zombies = [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and f") Z {os.getpid()} " in (p / "stat").read_text()
    ]
    assert zombies == []


def test_a_watched_running_shim_costs_no_file_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nxrd asks every loop pass: a live shim with a pidfd must not send it to the disk."""
    from nxrd.kernel import linux_runtime as runtime
    from nxrd.kernel.cgroupfs import LinuxCgroupFS
    from nxrd.kernel.runtime import Ended

    rt = runtime.LinuxRuntime(LinuxCgroupFS(tmp_path), tmp_path)
    s = spec(tmp_path, "sleep", "30")
    s = LaunchSpec(**{**s.__dict__, "status_file": rt.status_file("w")})
    started = launch(s)
    rt.watch(started.shim_pid)
    reads: list[Path] = []
    real = runtime.read_status
    monkeypatch.setattr(runtime, "read_status", lambda p: reads.append(p) or real(p))
    for _ in range(50):
        assert rt.ended("w", started.shim_pid) is None
    assert reads == []
    os.killpg(started.pid, signal.SIGTERM)
    while (got := rt.ended("w", started.shim_pid)) is None:
        time.sleep(0.01)
    assert got == Ended(None, signal.SIGTERM)
    assert reads  # the exit itself comes from the shim's record
    rt.reap()


def test_logs_and_records_are_private_and_the_workload_gets_the_usual_umask(
    tmp_path: Path,
) -> None:
    """Workloads print tokens and prompts, and nxrd's records name them: 0600 files in
    0700 directories, whatever nxrd's umask (#32). The workload's own files are its
    business: it starts with umask 022, not nxrd's."""
    old = os.umask(0o000)  # the widest umask nxrd could be started with
    try:
        s = spec(tmp_path, sys.executable, "-c", "import os; print(oct(os.umask(0)))")
        run_ = launch(s)
        wait_exit(s)
        reap(run_)
    finally:
        os.umask(old)
    assert s.log_file.read_text().split(" ", 1)[1] == "0o22\n"
    for path, mode in (
        (s.log_file, 0o600),
        (s.status_file, 0o600),
        (s.log_file.parent, 0o700),
        (s.status_file.parent, 0o700),
    ):
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path


def test_the_workload_starts_with_its_oom_score_adj(tmp_path: Path) -> None:
    code = "print(open('/proc/self/oom_score_adj').read().strip())"
    s = spec(tmp_path, sys.executable, "-c", code, oom_score_adj=650)
    run_ = launch(s)
    wait_exit(s)
    reap(run_)
    assert s.log_file.read_text().split()[-1] == "650"


def test_the_oom_killer_looks_at_lower_classes_and_priorities_first() -> None:
    from nxrd.model.classes import CLASS_NAMES, oom_score_adj

    # every priority of a class before any of the class above it; within one, the lower
    ranked = [oom_score_adj(c, p) for c in reversed(CLASS_NAMES) for p in (0, 500, 1000)]
    assert ranked == sorted(ranked, reverse=True)
    assert oom_score_adj("latency-critical", 1000) > -1000 and oom_score_adj("background", 0) < 1000
