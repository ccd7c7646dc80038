"""Readiness probes against real local listeners."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxrd.kernel.probes import check
from nxrd.profile.model import Ready


@pytest.fixture
def http_port() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp(http_port: int) -> None:
    assert check(Ready(tcp=f"127.0.0.1:{http_port}"))
    assert not check(Ready(tcp=f"127.0.0.1:{free_port()}"))


def test_http_needs_a_2xx(http_port: int) -> None:
    assert check(Ready(http=f"http://127.0.0.1:{http_port}/health"))
    assert not check(Ready(http=f"http://127.0.0.1:{http_port}/starting"))  # 503
    assert not check(Ready(http=f"http://127.0.0.1:{free_port()}/health"))


def test_exec_needs_exit_0() -> None:
    assert check(Ready(exec=["true"]))
    assert not check(Ready(exec=["false"]))
    assert not check(Ready(exec=["/no/such/program"]))
    assert not check(Ready(exec=["sleep", "5"], interval=0.2))  # too slow: not ready


def test_a_slow_check_runs_on_its_own_thread_and_the_loop_only_asks() -> None:
    """A readiness check that hangs (a server accepting but never answering) used to hold
    the daemon's loop, and so every other workload and the controller, for its timeout."""
    from nxrd.kernel.probes import Prober

    release = threading.Event()
    calls: list[str] = []

    def slow(ready: Ready, whose: object) -> bool:
        calls.append(threading.current_thread().name)
        return release.wait(timeout=30)  # blocks until the test lets it answer

    prober = Prober(slow, clock=lambda: 0.0)  # no deadline passes here
    ready = Ready(tcp="127.0.0.1:1")
    assert prober.ask("chat/100", ready) is None  # started, and answered at once
    assert prober.ask("chat/100", ready) is None  # still under way: not started twice
    assert not release.is_set()  # both asks returned while the check was blocked
    release.set()
    while (answer := prober.ask("chat/100", ready)) is None:
        threading.Event().wait(0.01)
    assert answer is True and calls == ["chat/100"]
    # an answer left by an earlier run of the workload is not taken for the new run's
    release.clear()
    prober.results["chat/100"] = True
    assert prober.ask("chat/200", ready) is None
    assert "chat/100" not in prober.results
    release.set()


def test_a_check_that_raises_is_a_failed_check() -> None:
    from nxrd.kernel.probes import Prober

    def broken(ready: Ready, whose: object) -> bool:
        raise RuntimeError("bug")

    prober = Prober(broken, clock=lambda: 0.0)
    ready = Ready(tcp="127.0.0.1:1")
    prober.ask("a/1", ready)
    while (answer := prober.ask("a/1", ready)) is None:
        threading.Event().wait(0.01)
    assert answer is False


def test_a_check_past_its_deadline_has_failed_and_no_second_one_piles_up() -> None:
    """A server that drips its answer: the attempt counts as failed once past 1 s (in all,
    not per read), each later ask says so without starting another thread, and its late
    answer is dropped."""
    from nxrd.kernel.probes import Prober

    now = [0.0]
    release = threading.Event()
    started: list[int] = []

    def dripping(ready: Ready, whose: object) -> bool:
        started.append(1)
        release.wait(timeout=30)
        return True

    prober = Prober(dripping, clock=lambda: now[0])
    ready = Ready(http="http://127.0.0.1:1/health")
    assert prober.ask("api/7", ready) is None
    now[0] = 0.9
    assert prober.ask("api/7", ready) is None  # within its second
    now[0] = 1.1
    assert prober.ask("api/7", ready) is False  # past it: failed
    now[0] = 5.0
    assert prober.ask("api/7", ready) is False  # still stuck: failed again, nothing new
    assert len(started) == 1
    release.set()
    while "api/7" in prober.running:
        threading.Event().wait(0.01)
    assert prober.results == {}  # the late True is not taken for ready


def test_an_exec_check_runs_as_the_workloads_user_with_its_environment(tmp_path: Path) -> None:
    """A health script the workload's user can edit must not run as root: the check gets
    the workload's user, groups, environment and directory, and nothing of nxrd's own."""
    import os

    from nxrd.kernel.launch import ids_of
    from nxrd.kernel.probes import Whose

    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    out = tmp_path / "shared"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    os.environ["NXRD_OWN_SECRET"] = "s3cret"  # nxrd's environment, which must not leak
    try:
        whose = Whose(
            env={"PATH": "/usr/bin:/bin", "HF_TOKEN": "workload's"},
            ids=ids_of("chat", "nobody", None),
            cwd=str(out),
        )
        script = (
            'id -u > seen; id -g >> seen; echo "$HF_TOKEN/$NXRD_OWN_SECRET" >> seen; pwd >> seen'
        )
        assert check(Ready(exec=["sh", "-c", script]), whose)
    finally:
        del os.environ["NXRD_OWN_SECRET"]
    uid, gid, env, cwd = (out / "seen").read_text().splitlines()
    nobody = ids_of("chat", "nobody", None)
    assert (int(uid), int(gid)) == (nobody[0], nobody[1])
    assert env == "workload's/" and cwd == str(out)


def test_an_exec_check_past_its_time_is_killed_with_what_it_started(tmp_path: Path) -> None:
    import os

    pidfile = tmp_path / "child"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    assert not check(Ready(exec=["sh", "-c", script], interval=0.3))
    child = int(pidfile.read_text())
    for _ in range(100):  # SIGKILL is delivered at once; the reaping by init may lag
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z":
            break
        threading.Event().wait(0.02)
    else:
        raise AssertionError("the check's background child outlived it")
