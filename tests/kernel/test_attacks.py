"""Local users against a running nxrd (issue 32): an outsider and a member of the API group
attack it at once for a while, as the unprivileged user nobody, while root keeps asking
for GET /v1/host. Nothing they try may change a workload, show a secret, stall root or
restart nxrd; and a workload's readiness check runs as the workload, not as root."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.test_daemon import Nxrd

SECRET = "hf_s3cret_4d1c9e"
ATTACK_SECONDS = 10
NOBODY = 65534
OUTSIDER_GID = 65533  # in no group nxrd knows: not the API group
API_GROUP = "nogroup"  # gid 65534: nobody's own group, so the "member" is in it

# The check reports who and where it ran, then passes: the test reads its report.
PROBE = (
    'o="$REPORT_DIR/probe"; {{ id -u; id -g; cat /proc/self/cgroup; echo "env=$HF_TOKEN/$NXRD_MARK";'
    ' cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max"; }} > "$o.tmp" 2>&1;'
    ' mv "$o.tmp" "$o"'
)


def profile(report_dir: Path, port: int) -> str:
    probe = json.dumps(["sh", "-c", PROBE.format()])
    return f"""
[host]
metrics = "{port}"

[workloads.victim]
command = ["sh", "-c", "echo token=$HF_TOKEN; exec sleep 600"]
class = "latency-critical"
cpus = 1
memory_max = "256M"
user = "nobody"
env = {{HF_TOKEN = "{SECRET}", REPORT_DIR = "{report_dir}"}}
ready = {{exec = {probe}, interval = "200ms", timeout = "60s"}}
slo = {{p99 = "200ms", window = "1s", source = {{push = true}}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_host(sock: Path) -> tuple[float, int]:
    """Seconds root waited for GET /v1/host, and the status."""
    start = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        # as nxrctl does: a full listen queue is waited out (the wait counts), not a failure
        while True:
            try:
                s.connect(str(sock))
                break
            except BlockingIOError:
                time.sleep(0.01)
        s.sendall(b"GET /v1/host HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    return time.monotonic() - start, int(data.split()[1])


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory nobody can reach: nxrd's sockets, the probe's report, the attacker."""
    path = Path(tempfile.mkdtemp(prefix="nxr-attack-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_local_users_can_neither_steer_read_secrets_nor_stall_nxrd(
    tmp_path: Path, cgroup_root: Path, shared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = shared / "reports"
    reports.mkdir()
    reports.chmod(0o777)  # the check, as nobody, writes its report here
    attacker = shared / "attacker.py"
    shutil.copy(Path(__file__).with_name("attacker.py"), attacker)
    attacker.chmod(0o644)
    port = free_port()
    sock = shared / "nxrd.sock"
    d = Nxrd(tmp_path, profile(reports, port), cgroup_root)
    d.state = shared / "state"  # where nobody could reach it, but for its own mode
    d.start(
        "--socket",
        str(sock),
        "--api-read",
        "all",
        "--api-group",
        API_GROUP,
        env={"NXRD_MARK": "nxrd-own"},
    )
    d.socket = sock
    leaf = cgroup_root / "latency-critical/victim"
    try:
        d.wait_for(lambda: d.state_of("victim").get("state") == "ready")
        victim_pid = d.state_of("victim")["pid"]
        # The readiness check ran as the workload: its user and group, its leaf, its
        # environment (not nxrd's), and it could read its own limits under nxrd's umask.
        uid, gid, cgroup, env, memory_max = (reports / "probe").read_text().splitlines()
        assert (int(uid), int(gid)) == (NOBODY, NOBODY)
        assert cgroup == f"0::/{leaf.relative_to('/sys/fs/cgroup')}"
        assert env == f"env={SECRET}/"
        assert memory_max == str(256 << 20)
        nxrd_pid = d.proc.pid if d.proc else 0

        # Membership is what the caller's process holds (SO_PEERGROUPS): the API group
        # only as a supplementary group, and listed nowhere in /etc/group, still steers.
        for verb in ("freeze", "thaw"):
            url = f"http://localhost/v1/workloads/victim/{verb}"
            answer = subprocess.run(
                ["curl", "-sS", "--unix-socket", str(sock), "-X", "POST", url],
                capture_output=True,
                text=True,
                timeout=60,
                user=NOBODY,
                group=OUTSIDER_GID,
                extra_groups=[NOBODY],
            )
            assert "error" not in json.loads(answer.stdout), answer.stdout

        def attack(role: str, gid: int) -> subprocess.Popen[str]:
            argv = ["/usr/bin/python3", str(attacker), role, str(shared), str(d.state)]
            return subprocess.Popen(
                [*argv, str(port), str(ATTACK_SECONDS), SECRET],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                user=NOBODY,
                group=gid,
                extra_groups=[],
                cwd=shared,
            )

        attackers = [attack("outsider", OUTSIDER_GID), attack("member", NOBODY)]
        waits = []
        while any(a.poll() is None for a in attackers):
            waited, status = get_host(sock)
            assert status == 200
            waits.append(waited)
            time.sleep(0.05)
        got = {}
        for a, role in zip(attackers, ("outsider", "member"), strict=True):
            out, err = a.communicate(timeout=60)
            assert a.returncode == 0, err
            got[role] = json.loads(out)
        figures = {
            "slowest_root_answer_s": round(max(waits), 3),
            "median_root_answer_s": round(sorted(waits)[len(waits) // 2], 4),
            "root_answers": len(waits),
            "mutations_through": sum(g["mutations"] + g["pwned"] for g in got.values()),
            "secrets_read": sum(g["secrets"] for g in got.values()),
            "state_files_read": sum(g["files_read"] for g in got.values()),
            "server_errors": sum(g["server_errors"] for g in got.values()),
            "attacker_requests": sum(g["tries"] for g in got.values()),
            "datagrams_flooded": got["outsider"]["datagrams"],
            "daemon_restarts": int(d.proc is None or d.proc.poll() is not None)
            + int(d.proc is not None and d.proc.pid != nxrd_pid),
        }
        with capsys.disabled():  # in the kernel tier's output, passed or not
            print("\nattack figures:", json.dumps(figures))
        assert figures["mutations_through"] == 0, got
        assert figures["secrets_read"] == 0 and figures["state_files_read"] == 0, got
        assert figures["server_errors"] == 0, got
        assert figures["daemon_restarts"] == 0
        assert figures["attacker_requests"] > 100 and figures["datagrams_flooded"] > 1000, got
        # The target is under 1 s (docs/security.md has the figures); this bound only
        # catches a stall such as the 9 s one this issue found.
        assert figures["slowest_root_answer_s"] < 3.0, figures
        # nobody stopped, restarted or froze it
        assert d.state_of("victim").get("state") == "ready"
        assert d.state_of("victim")["pid"] == victim_pid
        assert (leaf / "cgroup.freeze").read_text().strip() == "0"
        assert not Path("/tmp/nxr-pwned").exists()
        # the metrics endpoint still answers after the slow clients
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        # and the modes that kept the secrets in: state and logs are root's only
        for path in (d.state, d.state / "logs"):
            assert path.stat().st_mode & 0o777 == 0o700, path
        for path in d.state.rglob("*"):
            if path.is_file():
                assert path.stat().st_mode & 0o077 == 0, path
    finally:
        d.stop()
        sock.unlink(missing_ok=True)
