"""nxrctl and nxrd as a user runs them: real processes, exit codes, stdout and stderr."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.daemon.core import Daemon
from nxrd.kernel.fake_host import FakeHost
from nxrd.model.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOPO = ROOT / "tests/fixtures/topologies"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_validate_examples() -> None:
    r = run("nxrctl", "validate", *sorted(str(p) for p in (ROOT / "profiles").glob("*.toml")))
    assert r.returncode == 0, r.stderr
    assert "profiles/cpu-inference.toml: ok (3 workloads)" in r.stdout


def test_validate_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[workloads.chat]\ncommand = ["x"]\nmemroy_max = "4G"\ncpus = "two"\n')
    good = ROOT / "profiles/cpu-inference.toml"
    r = run("nxrctl", "validate", str(good), str(bad))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{bad}: workloads.chat.cpus: input should be a valid integer (got 'two')",
        f"{bad}: workloads.chat.memroy_max: unknown key (did you mean 'memory_max'?)",
    ]
    assert "ok" in r.stdout  # the good file is still reported


def test_validate_against_a_topology_catches_overcommit(tmp_path: Path) -> None:
    r = run(
        "nxrctl",
        "validate",
        "profiles/gpu-two-models.toml",
        "--topology",
        str(TOPO / "smt16-1gpu.json"),
    )
    assert r.returncode == 1
    assert (
        "profiles/gpu-two-models.toml: workloads.chat.gpus: needs 2 GPU(s); 1 free of 1" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_plan_table_and_json() -> None:
    r = run(
        "nxrctl",
        "plan",
        "profiles/gpu-two-models.toml",
        "--topology",
        str(TOPO / "2socket-8gpu.json"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[3].split() == [
        "WORKLOAD",
        "CLASS",
        "CPUS",
        "N",
        "EXCL",
        "MEMORY",
        "GPUS",
        "THREADS",
    ]
    r = run(
        "nxrctl",
        "plan",
        "profiles/gpu-two-models.toml",
        "--topology",
        str(TOPO / "2socket-8gpu.json"),
        "-o",
        "json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == 1
    assert [w["name"] for w in doc["workloads"]] == ["chat", "embed", "eval"]
    chat = doc["workloads"][0]
    assert set(chat) >= {"class", "cgroup", "cpus", "mems", "gpus", "threads", "files", "env"}
    assert chat["files"]["cpu.max"] == "max 100000"


def test_plan_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    r = run(
        "nxrctl", "plan", "profiles/cpu-inference.toml", "--topology", str(TOPO / "vm-2cpu.json")
    )
    assert r.returncode == 1
    assert r.stderr.startswith(
        "profiles/cpu-inference.toml: workloads.chat.cpus: chat needs 8 exclusive CPUs; 2 are free"
    )
    r = run(
        "nxrctl", "plan", "profiles/cpu-inference.toml", "--topology", str(tmp_path / "nope.json")
    )
    assert r.returncode == 1
    assert (
        r.stderr
        == f"error: {tmp_path}/nope.json: cannot read topology: No such file or directory\n"
    )
    (tmp_path / "t.json").write_text('{"cpus": []}')
    r = run("nxrctl", "plan", "profiles/cpu-inference.toml", "--topology", str(tmp_path / "t.json"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "invalid topology" in r.stderr


def test_captured_topology_plans_like_the_host(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    r = run("nxrd", "topology", "-o", str(out))
    assert r.returncode == 0, r.stderr
    r = run(
        "nxrctl", "plan", "-o", "json", "--topology", str(out), "tests/fixtures/profiles/small.toml"
    )
    here = run("nxrctl", "plan", "-o", "json", "tests/fixtures/profiles/small.toml")
    assert r.returncode == here.returncode == 0, r.stderr + here.stderr
    assert json.loads(r.stdout) == json.loads(here.stdout)


def test_versions_and_help() -> None:
    assert run("nxrd", "--version").stdout.startswith("nxrd, version ")
    assert run("nxrctl", "--version").stdout.startswith("nxrctl, version ")
    assert "validate" in run("nxrctl", "--help").stdout


def test_unreadable_paths_are_one_line_errors(tmp_path: Path) -> None:
    gone = tmp_path / "gone.toml"
    r = run("nxrctl", "validate", str(gone))
    assert r.returncode == 1
    assert r.stderr == f"{gone}: cannot read profile: No such file or directory\n"
    r = run("nxrd", "topology", "-o", str(tmp_path / "no/such/dir.json"))
    assert r.returncode == 1
    assert (
        r.stderr == f"error: cannot write {tmp_path}/no/such/dir.json: No such file or directory\n"
    )
    assert run("nxrctl", "apply").returncode == 2  # usage error
    r = run("nxrctl", "--socket", str(tmp_path / "none.sock"), "plan")  # the running nxrd's plan
    assert r.returncode == 1
    assert r.stderr == f"error: cannot reach nxrd at {tmp_path}/none.sock: is it running?\n"


def test_nxrd_refuses_to_run_without_isolation(tmp_path: Path) -> None:
    # Safe on any host: on hosts without cgroup v2 controllers (these machines) nxrd refuses
    # at its requirements check; elsewhere --cgroup-root is a plain directory, not a cgroup,
    # and it fails reading cgroup.procs there. Either way: one line, exit 1.
    state = tmp_path / "state"
    r = run(
        "nxrd",
        "--profile",
        "tests/fixtures/profiles/small.toml",
        "--state-dir",
        str(state),
        "--cgroup-root",
        str(tmp_path / "not-a-cgroup"),
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    if "refusing to start without isolation" in r.stderr:
        assert "bound to v1 hierarchies" in r.stderr or "not available" in r.stderr
        assert not state.exists()  # nothing was changed


def test_nxrd_check_exit_code_matches_its_verdict() -> None:
    r = run("nxrd", "check")
    assert r.returncode in (0, 1)
    assert ("MISSING" in r.stdout) == (r.returncode == 1)


def test_nxrctl_imports_no_kernel_code_and_no_pydantic() -> None:
    # It must start fast and run unprivileged: the socket commands need neither.
    code = "import sys, nxrd.cli.main; print(sorted(m for m in sys.modules if m.startswith(('nxrd.kernel', 'pydantic'))))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_validate_reads_a_directory_as_nxrd_does(tmp_path: Path) -> None:
    """One profile from its *.toml files, merged; before, validate refused what nxrd ran."""
    (tmp_path / "a.toml").write_text('[workloads.a]\ncommand = ["x"]\n')
    (tmp_path / "b.toml").write_text('[workloads.b]\ncommand = ["x"]\nafter = ["a"]\n')
    r = run("nxrctl", "validate", str(tmp_path))
    assert (r.returncode, r.stdout) == (0, f"{tmp_path}: ok (2 workloads)\n"), r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("nxrctl", "validate", str(empty))
    assert r.returncode == 1
    assert r.stderr == f"{empty}: no *.toml profiles in this directory\n"


def test_validate_this_host_refuses_what_plan_refuses_here(tmp_path: Path) -> None:
    """A profile that does not fit this machine (more CPUs than any host has)."""
    big = tmp_path / "big.toml"
    big.write_text('[workloads.a]\ncommand = ["x"]\nclass = "latency-critical"\ncpus = 4096\n')
    assert run("nxrctl", "validate", str(big)).returncode == 0  # valid as text
    r = run("nxrctl", "validate", "--this-host", str(big))
    plan = run("nxrctl", "plan", str(big))
    assert r.returncode == plan.returncode == 1
    assert r.stderr == plan.stderr  # the same refusal, word for word
    assert "workloads.a.cpus" in r.stderr
    r = run("nxrctl", "validate", "--this-host", "--topology", "t.json", str(big))
    assert r.returncode == 2 and "give one host to check against" in r.stderr


def test_topology_o_json_means_the_format_not_a_file(tmp_path: Path) -> None:
    """`-o json` is how nxrctl asks for JSON; nxrd topology wrote a file named json."""
    r = subprocess.run(
        [str(BIN / "nxrd"), "topology", "--no-gpus", "-o", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cpus"]
    assert list(tmp_path.iterdir()) == []  # no file written
    r = run("nxrd", "topology", "--no-gpus", "-o", "table")
    assert r.returncode == 0 and r.stdout.startswith("CPUs ")
    r = run("nxrd", "topology", "--no-gpus", "-o", str(tmp_path / "t.json"))
    assert r.returncode == 0 and json.loads((tmp_path / "t.json").read_text())["cpus"]


def test_the_commands_own_options_may_follow_the_subcommand() -> None:
    from nxrd.cli.options import hoisted

    assert hoisted(["status", "--socket", "/s", "-o", "json", "--debug"]) == [
        *("--socket", "/s", "--debug", "status", "-o", "json")
    ]
    assert hoisted(["logs", "chat", "--socket=/s"]) == ["--socket=/s", "logs", "chat"]
    assert hoisted(["apply", "--", "--debug"]) == ["apply", "--", "--debug"]  # a file name
    r = run("nxrctl", "status", "--socket", "/nonexistent/nxrd.sock")
    assert r.returncode == 1
    assert r.stderr == "error: cannot reach nxrd at /nonexistent/nxrd.sock: is it running?\n"
    r = run("nxrctl", "status", "--debug", "--socket", "/nonexistent/nxrd.sock")
    assert "Traceback" in r.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    """nxrd on the fake host, two workloads started, its API served on a thread."""
    (tmp_path / "p.toml").write_text(
        '[workloads.a]\ncommand = ["x"]\n[workloads.b]\ncommand = ["x"]\n'
    )
    sock = str(tmp_path / "nxrd.sock")
    host = FakeHost(load_topology(TOPO / "vm-2cpu.json"))
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "s"), socket_path=sock, host=host)
    d.start()
    d.sup.tick(0.0)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            if select.select([d.api.fileno()], [], [], 0.05)[0]:
                d.api.serve_ready()

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield d, sock
    finally:
        done.set()
        t.join()
        d.close()


def test_verbs_take_several_names_and_go_on_past_a_refused_one(
    served: tuple[Daemon, str],
) -> None:
    d, sock = served
    r = run("nxrctl", "stop", "a", "nope", "b", "--socket", sock)
    assert r.returncode == 1
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["a", "b"]
    assert r.stderr.count("\n") == 1 and "nope" in r.stderr
    assert {n: rec.state.value for n, rec in d.sup.records.items()} == {
        "a": "stopping",
        "b": "stopping",
    }


def test_logs_since_through_nxrd_reads_the_whole_current_file(
    served: tuple[Daemon, str],
) -> None:
    d, sock = served
    path = d.runtime.log_file("a")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = "".join(f"2026-12-06T10:00:00 old {i:06d}\n" for i in range(20_000))  # > 256 KiB
    path.write_text(old + "2026-12-06T14:00:00 new\n")
    r = run("nxrctl", "logs", "a", "--since", "2026-12-06T12:00", "--socket", sock)
    assert (r.returncode, r.stdout, r.stderr) == (0, "2026-12-06T14:00:00 new\n", "")
    r = run("nxrctl", "logs", "a", "--since", "2026-12-06T09:00", "--socket", sock)
    assert r.stdout.count("\n") == 20_001  # from the file's start, past the first chunk


def test_logs_without_nxrd_read_the_file_and_since_keeps_the_recent_lines(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "chat.log").write_text(
        "2026-12-06T13:59:59 loading\n2026-12-06T14:00:00 ready\n2026-12-06T14:05:00 served 10\n"
    )
    args = ("--socket", str(tmp_path / "none.sock"), "--state-dir", str(tmp_path))
    r = run("nxrctl", "logs", "chat", *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"nxrd is not running: reading {logs / 'chat.log'}\n"
    assert r.stdout.count("\n") == 3
    r = run("nxrctl", "logs", "chat", "--since", "2026-12-06T14:00", *args)
    assert r.stdout == "2026-12-06T14:00:00 ready\n2026-12-06T14:05:00 served 10\n"
    r = run("nxrctl", "logs", "chat", "--since", "2026-12-06 14:00", "-n", "1", *args)
    assert r.stdout == "2026-12-06T14:05:00 served 10\n"
    r = run("nxrctl", "logs", "nope", *args)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: nxrd is not running, and {logs / 'nope.log'}: No such file or directory\n"
    )


def test_since_reads_durations_and_local_times() -> None:
    import time

    from nxrd.cli.format import log_since
    from nxrd.errors import NxrError

    now = time.mktime((2026, 12, 6, 14, 30, 0, 0, 0, -1))  # local time
    assert log_since("10m", now) == "2026-12-06T14:20:00"
    assert log_since("1h30m", now) == "2026-12-06T13:00:00"
    assert log_since("9:05", now) == "2026-12-06T09:05:00"
    assert log_since("2026-12-01T08:00:07", now) == "2026-12-01T08:00:07"
    assert log_since("2026-12-01", now) == "2026-12-01T00:00:00"
    try:
        log_since("yesterday", now)
    except NxrError as e:
        assert "--since" in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("a bad --since was accepted")


def test_gpu_release_says_why_it_cannot(served: tuple[Daemon, str]) -> None:
    _, sock = served
    r = run("nxrctl", "gpu", "release", "0", "--socket", sock)
    assert (r.returncode, r.stderr) == (1, "error: no GPUs on this host: nothing is quarantined\n")
    assert run("nxrctl", "gpu", "release", "zero", "--socket", sock).returncode == 2
