"""The control API over a real unix socket, backed by a supervisor on the fake runtime."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxrd.api.client import ApiCallError, Client
from nxrd.api.handlers import Handlers
from nxrd.api.protocol import ApiError, Request
from nxrd.api.server import Access, ApiServer
from nxrd.errors import NxrError
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Record, Supervisor
from tests.unit.conftest import TOPOLOGIES

BIN = Path(sys.executable).parent
PROFILE = (
    '[workloads.chat]\ncommand=["serve"]\nclass="latency-critical"\ncpus=2\nmemory_max="4G"\n'
    '[workloads.embed]\ncommand=["embed"]\nclass="batch"\n'
)


class Running:
    def __init__(self, tmp: Path, read: str = "group", group: str | None = None) -> None:
        profile = parse_profile(PROFILE)
        topo = load_topology(TOPOLOGIES / "smt16-1gpu.json")
        self.plan = make_plan(profile, topo)
        self.rt = FakeRuntime()
        self.sup = Supervisor(profile, self.plan, self.rt, EventLog(), lambda: 1000.0)
        self.sup.tick(0.0)
        access = Access(group, read)
        self.path = str(tmp / "nxrd.sock")
        self.errors: list[str] = []
        self.server = ApiServer(self.path, access, on_error=self.errors.append)
        self.reconfigured: list[tuple[object, bool, str]] = []
        self.logs = tmp
        self.server.handlers = Handlers(self.sup, self.plan, topo, access, self, clock=lambda: 1.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    # the handlers' Daemon protocol
    def stats(self, rec: Record) -> dict[str, Any]:
        return {"cpu_percent": 12.5} if rec.name == "chat" else {}

    def explain(self, rec: Record) -> dict[str, Any]:
        return {"resources": []}

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def reconfigure(self, files: object, dry_run: bool, who: str) -> dict[str, Any]:
        self.reconfigured.append((files, dry_run, who))
        return {"changes": [], "source": "test", "applied": not dry_run, "warnings": []}

    def _loop(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.server.fileno()], [], [], 0.05)
            if ready:
                self.server.serve_ready()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.close()


def test_read_calls(api: Running) -> None:
    c = Client(api.path)
    workloads = c.call("GET", "workloads")["workloads"]
    assert [(w["name"], w["state"], w["cpus"]) for w in workloads] == [
        ("chat", "ready", "1,17"),
        ("embed", "ready", "2-15,18-31"),
    ]
    chat = c.call("GET", "workloads/chat")
    assert chat["files"]["cpu.max"] == "max 100000" and chat["command"] == ["serve"]
    events = c.call("GET", "events", since=0, workload="chat")
    assert [e["new"] for e in events["events"]] == ["starting", "ready"]
    assert c.call("GET", "events", since=events["last"], workload="chat")["events"] == []
    assert c.call("GET", "plan")["format"] == 1
    assert c.call("GET", "host")["hostname"] == "smt16-1gpu"


def test_mutations_reach_the_supervisor(api: Running) -> None:
    c = Client(api.path)
    assert c.call("POST", "workloads/chat/stop")["workload"]["state"] == "stopping"
    assert api.rt.procs["chat"].signals == [15]


def test_errors_have_stable_codes(api: Running) -> None:
    c = Client(api.path)
    cases = [
        (("GET", "workloads/nope"), "not_found"),
        (("POST", "workloads/chat/explode"), "not_found"),
        (("DELETE", "workloads/chat"), "method_not_allowed"),
        (("GET", "events"), None),
    ]
    for (method, path), code in cases:
        if code is None:
            c.call(method, path)
            continue
        with pytest.raises(ApiCallError) as info:
            c.call(method, path)
        assert info.value.code == code
    with pytest.raises(ApiCallError, match="since must be"):
        c.call("GET", "events", since="x")


def test_nxrctl_against_the_socket(api: Running) -> None:
    env = {**os.environ, "NXR_SOCKET": api.path}

    def nxrctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "nxrctl"), *args], capture_output=True, text=True, env=env, timeout=30
        )

    r = nxrctl("status")
    assert r.returncode == 0, r.stderr
    header, chat = r.stdout.splitlines()[:2]
    assert header.split("  ")[0] == "WORKLOAD" and "THROTTLED%" in header and "WHY" in header
    assert chat.split()[:7] == ["chat", "latency-critical", "ready", "1002", "1,17", "12.5", "-"]
    assert "-/4G" in chat
    assert json.loads(nxrctl("status", "-o", "json").stdout)["workloads"][0]["name"] == "chat"
    assert nxrctl("show", "chat").returncode == 0
    r = nxrctl("stop", "chat")
    assert r.returncode == 0 and r.stdout.startswith("chat: stopping")
    r = nxrctl("show", "nope")
    assert r.returncode == 1 and r.stderr == "error: no workload named 'nope'\n"
    r = nxrctl("events", "--workload", "chat")
    assert r.returncode == 0 and "chat: ready -> stopping" in r.stdout
    r = nxrctl("top", "-n", "2", "-d", "0.1")
    frames = r.stdout.split("nxr top - ")
    assert r.returncode == 0 and len(frames) == 3 and "2 workloads" in frames[1]
    assert frames[1].splitlines()[2].startswith("WORKLOAD")
    assert frames[1].splitlines()[3].startswith("chat")  # busiest first


def test_nxrctl_logs(api: Running) -> None:
    log = api.logs / "chat.log"
    log.write_text("".join(f"line {i}\n" for i in range(300)))
    r = subprocess.run(
        [str(BIN / "nxrctl"), "--socket", api.path, "logs", "chat", "-n", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout == "line 297\nline 298\nline 299\n"
    follow = subprocess.Popen(
        [str(BIN / "nxrctl"), "--socket", api.path, "logs", "chat", "-n", "1", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "line 299\n"
        with log.open("a") as f:
            f.write("new line\n")
        assert follow.stdout.readline() == "new line\n"
        log.write_text("rotated\n")  # a smaller file: read from its start
        assert follow.stdout.readline() == "rotated\n"
    finally:
        follow.kill()
        follow.wait()


def test_nxrctl_show_exits_3_when_not_running(api: Running) -> None:
    api.sup.stop("embed", 0.0)
    api.rt.exit("embed", code=0)
    api.sup.tick(2.0)
    r = subprocess.run(
        [str(BIN / "nxrctl"), "--socket", api.path, "show", "embed"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 3


def as_nobody(path: str, method: str, target: str) -> tuple[str, str]:
    """(code or 'ok', message) of one call made by uid 65534."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgid(65534)
        os.setuid(65534)
        try:
            Client(path).call(method, target)
            out = "ok\n"
        except ApiCallError as e:
            out = f"{e.code}\n{e}"
        except NxrError as e:
            out = f"nxr\n{e}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    code, _, message = text.partition("\n")
    return code, message


def test_unprivileged_users(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs as root (the developer and CI machines are root)")
    shared = Path(tempfile.mkdtemp(prefix="nxr-api-"))  # pytest's tmp_path is 0700 all the way
    shared.chmod(0o755)
    tmp_path = shared
    r = Running(tmp_path, read="all")
    try:
        assert oct(os.stat(r.path).st_mode & 0o777) == "0o666"
        assert as_nobody(r.path, "GET", "workloads")[0] == "ok"
        code, message = as_nobody(r.path, "POST", "workloads/chat/stop")
        assert (
            code == "forbidden"
            and message == "uid 65534 may not stop workloads (root or the API group)"
        )
        assert r.rt.procs["chat"].signals == []  # refused, and nothing happened
        # a log holds what the workload printed (tokens...): its file is root's, and so is
        # reading it through the API
        assert as_nobody(r.path, "GET", "workloads/chat/logs") == (
            "forbidden",
            "uid 65534 may not read logs (root or the API group)",
        )
        for target in ("apply", "reload"):
            code, message = as_nobody(r.path, "POST", target)
            assert code == "forbidden", message
        assert r.reconfigured == []
        # a dry run answers with env's old and new values: not for readers (#32 item 5)
        assert as_nobody(r.path, "POST", "apply?dry_run=1") == (
            "forbidden",
            "uid 65534 may not apply profiles, not even as a dry run: only root may, since"
            " a profile runs any command as any user",
        )
    finally:
        r.close()
    # The API group steers what root declared; it does not choose what runs as root (#32
    # item 1): a profile may name any command and any user.
    r = Running(tmp_path, read="group", group="nogroup")  # nobody's own group
    try:
        assert as_nobody(r.path, "POST", "workloads/chat/stop")[0] == "ok"
        for target in ("apply", "reload", "apply?dry_run=1"):
            code, message = as_nobody(r.path, "POST", target)
            assert code == "forbidden" and "only root may" in message, (target, message)
        assert r.reconfigured == []
    finally:
        r.close()
    r = Running(tmp_path, read="group")
    try:
        assert oct(os.stat(r.path).st_mode & 0o777) == "0o660"
        code, message = as_nobody(r.path, "GET", "workloads")
        assert code == "nxr" and message.startswith("permission denied on")
    finally:
        r.close()
        shared.rmdir()


def raw(path: str, data: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        # The server may answer and close before reading all of an oversized request.
        with contextlib.suppress(OSError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
        return out
    finally:
        s.close()


def test_apply_bodies(api: Running) -> None:
    c = Client(api.path)
    for body in (
        {},
        {"files": []},
        {"files": [{"name": "a.toml"}]},
        {"files": [{"name": 1, "text": ""}]},
    ):
        with pytest.raises(ApiCallError) as info:
            c.call("POST", "apply", body=body)
        assert info.value.code == "bad_request"
    assert api.reconfigured == []
    files = {"files": [{"name": "a.toml", "text": "[workloads.x]"}]}
    assert c.call("POST", "apply", body=files, dry_run=1)["applied"] is False
    assert c.call("POST", "reload")["applied"] is True
    assert api.reconfigured == [
        ([("a.toml", "[workloads.x]")], True, "uid 0"),
        (None, False, "uid 0"),
    ]


def test_oversized_and_malformed_requests(api: Running) -> None:
    assert raw(
        api.path, b"GET /v1/workloads HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    ).startswith(b"HTTP/1.1 413")
    big = b"POST /v1/workloads/chat/stop HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
    assert raw(api.path, big).startswith(b"HTTP/1.1 413")
    assert raw(api.path, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(api.path, b"GET /v2/x HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    body = raw(api.path, b"GET /v1/workloads HTTP/1.1\r\n\r\n").split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["workloads"]


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(
    st.binary(max_size=2000)
    | st.builds(lambda a, b: a + b"\r\n\r\n" + b, st.binary(max_size=300), st.binary(max_size=300))
)
def test_random_bytes_never_disturb_the_daemon(api: Running, data: bytes) -> None:
    answer = raw(api.path, data)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
    assert api.errors == []  # no handler crashed
    assert Client(api.path).call("GET", "workloads")["workloads"]


def test_freeze_and_thaw_through_the_api(api: Running) -> None:
    c = Client(api.path)
    assert c.call("POST", "workloads/chat/freeze")["workload"]["frozen"] is True
    assert api.rt.frozen["chat"]
    assert c.call("POST", "workloads/chat/thaw")["workload"]["frozen"] is False
    api.sup.stop("embed", 0.0)
    with pytest.raises(ApiCallError) as info:
        c.call("POST", "workloads/embed/freeze")
    assert info.value.code == "conflict"


def test_slow_clients_hold_only_their_own_connections(tmp_path: Path) -> None:
    """200 local clients that each send half a request and wait (or never read): nxrd's
    loop keeps serving everyone else, and drops each one at its deadline. Before, the loop
    served one connection at a time, up to 1 s per read, so they held it for minutes."""
    from nxrd.api import connections
    from nxrd.daemon import waiting
    from nxrd.daemon.core import Daemon
    from nxrd.kernel.fake_host import FakeHost

    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    host.monotonic = time.monotonic  # type: ignore[method-assign]  # real waits here
    (tmp_path / "p.toml").write_text('[workloads.a]\ncommand = ["x"]\n')
    sock = str(tmp_path / "nxrd.sock")
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "s"), socket_path=sock, host=host)
    d.start()
    wake_r, wake_w = os.pipe()
    done = threading.Event()

    def loop() -> None:  # the daemon's loop, less its signals and supervision
        while not done.is_set():
            now = time.monotonic()
            waiting.wait(d, waiting.poll_set(d, wake_r, now), wake_r, now, now + 0.1)

    t = threading.Thread(target=loop)
    t.start()
    slow: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)  # blocking: waits while the listen backlog is full (a timeout
            s.settimeout(5)  # would make a unix socket's connect fail with EAGAIN instead)
            s.sendall(b"GET /v1/work")  # and nothing more
            slow.append(s)
        body = Client(sock, timeout=10).call("GET", "workloads")
        assert [w["name"] for w in body["workloads"]] == ["a"]
        assert d.api.conns  # slow ones are still there, each waiting alone (some may have
        # reached their deadline already on a busy machine)
        time.sleep(connections.REQUEST_DEADLINE + 0.5)
        assert d.api.conns == {}  # each dropped at its deadline
        assert slow[0].recv(100) == b""  # closed, without an answer
    finally:
        done.set()
        os.write(wake_w, b"x")
        t.join()
        for s in slow:
            s.close()
        d.close()
        os.close(wake_r)
        os.close(wake_w)


PATH_PARTS = ("workloads", "chat", "embed", "nope", "start", "stop", "restart", "freeze")
PATH_PARTS += ("thaw", "apply", "reload", "gpus", "0", "release", "plan", "events", "..", "")
SEGMENTS = st.sampled_from(PATH_PARTS)


@settings(
    max_examples=500,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(
    st.sampled_from(["POST", "PUT", "DELETE", "PATCH", "GET"]),
    st.lists(SEGMENTS, min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(["dry_run", "offset", "since", "x"]), st.text(max_size=5)),
    st.binary(max_size=200),
)
def test_a_caller_outside_the_operator_group_changes_nothing(
    api: Running, method: str, path: list[str], query: dict[str, str], body: bytes
) -> None:
    """Whatever an unprivileged caller sends, no workload changes state and nothing is
    applied, reloaded or released (a dry run may answer)."""
    before = {n: (r.state, r.frozen) for n, r in api.sup.records.items()}
    handlers = api.server.handlers
    assert handlers is not None
    req = Request(method, tuple(path), query, body, uid=4321, gid=4321)
    with contextlib.suppress(ApiError):
        handlers.handle(req)
    assert {n: (r.state, r.frozen) for n, r in api.sup.records.items()} == before
    assert all(dry for _, dry, _ in api.reconfigured)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (("events",), {"since": "²"}),
        (("events",), {"since": "9" * 5000}),
        (("events",), {"since": "-1"}),
        (("workloads", "chat", "logs"), {"offset": "--5"}),
        (("workloads", "chat", "logs"), {"offset": "٣"}),
    ],
)
def test_malformed_numbers_are_bad_requests_not_500s(
    api: Running, path: tuple[str, ...], query: dict[str, str]
) -> None:
    handlers = api.server.handlers
    assert handlers is not None
    with pytest.raises(ApiError) as e:
        handlers.handle(Request("GET", path, query, uid=0))
    assert e.value.code == "bad_request"


def test_a_deeply_nested_body_or_profile_is_a_bad_request(api: Running) -> None:
    """100 000 nested arrays raised RecursionError: a 500 and a line in nxrd's log."""
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"files": ' * 50_000):
        head = f"POST /v1/apply HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        assert raw(api.path, head + body).startswith(b"HTTP/1.1 400 ")
    assert api.errors == []  # no handler failed


@pytest.mark.parametrize("name", ["\udcff.toml", "a\nb.toml", "x" * 300])
def test_an_applied_file_name_the_journal_cannot_take_is_refused(api: Running, name: str) -> None:
    handlers = api.server.handlers
    assert handlers is not None
    body = json.dumps({"files": [{"name": name, "text": "[workloads.a]\n"}]}).encode()
    with pytest.raises(ApiError) as e:
        handlers.handle(Request("POST", ("apply",), {}, body, uid=0))
    assert e.value.code == "bad_request"
    assert api.reconfigured == []


def test_group_membership_is_the_callers_process_not_etc_group() -> None:
    """SO_PEERGROUPS: a member whose supplementary groups were dropped is no longer one, and
    a process given the group is one, whatever /etc/group lists (#32 item 10)."""
    from nxrd.kernel.fake_host import FakeHost

    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"), groups={"nxr": 4242})
    host.members[4242] = {1000}  # /etc/group lists uid 1000
    access = Access("nxr", "group", host)

    def asks(uid: int, groups: tuple[int, ...] | None) -> bool:
        return access.privileged(Request("POST", ("reload",), uid=uid, gid=uid, groups=groups))

    assert asks(1000, ()) is False  # listed, but its process dropped the group
    assert asks(2000, (4242,)) is True  # not listed, but its process holds the group
    assert asks(1000, None) is True  # the kernel could not say: /etc/group decides
    assert asks(2000, None) is False
