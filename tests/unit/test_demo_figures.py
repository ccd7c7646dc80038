"""The demo's and co-location benchmark's figures, on small made-up recordings."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from demo.figures import (
    LOST,
    Phase,
    of_capacity,
    over,
    percentile,
    phase_figures,
    phases,
    rate,
    reaction,
    windows,
)
from demo.loadgen import schedule
from demo.report import figures, plot, table


def test_nearest_rank_percentile_and_lost_requests() -> None:
    assert percentile([0.1] * 99 + [5.0], 0.99) == 0.1
    assert percentile([0.1] * 98 + [5.0, 6.0], 0.99) == 5.0
    assert percentile([0.1, LOST], 0.99) == LOST  # a lost request is as late as can be
    assert percentile([], 0.99) is None


def test_windows_and_the_share_over_the_slo() -> None:
    samples = [(t / 10, 0.5 if 2 <= t / 10 < 4 else 0.1) for t in range(60)]  # 10/s for 6 s
    wins = windows(samples, 0.0, 6.0, 2.0, 0.99)
    assert wins == [(0.0, 0.1), (2.0, 0.5), (4.0, 0.1)]
    assert over(wins, 0.2) == 1 / 3
    assert over([(0.0, None)], 0.2) == 0.0  # no requests: nothing over


def test_reaction_is_the_time_until_every_later_second_is_within_the_slo() -> None:
    slow_until = 12.5  # the step at 10 s; slow for 2.5 s
    samples = [(t / 10, 0.5 if 10 <= t / 10 < slow_until else 0.1) for t in range(200)]
    assert reaction(samples, 10.0, 20.0, 0.2, 0.99) == 3.0  # the window 12-13 s was slow
    assert reaction([(t / 10, 0.1) for t in range(200)], 10.0, 20.0, 0.2, 0.99) == 0.0
    assert reaction([(t / 10, 0.5) for t in range(200)], 10.0, 20.0, 0.2, 0.99) is None


def test_rate_of_a_counter_interpolates_and_needs_coverage() -> None:
    series = [(0.0, 0.0), (1.0, 10.0), (3.0, 50.0)]
    assert rate(series, 0.5, 2.0) == (30.0 - 5.0) / 1.5
    assert rate(series, 0.0, 3.4) == 50.0 / 3.0  # the last 0.4 s is not covered: left out
    assert rate(series, 2.0, 9.0) is None  # covers under half the span
    assert rate([], 0.0, 1.0) is None


def test_phase_figures() -> None:
    samples = [(t / 10, 0.05) for t in range(100)] + [(10 + t / 20, 0.3) for t in range(200)]
    batch = [(float(t), 10.0 * t) for t in range(21)]  # 10 blocks/s
    server = [(float(t), 0.25 * t if t < 10 else 2.5 + 0.75 * (t - 10)) for t in range(21)]
    low, high = phases("10:10,20:10")
    assert (low, high) == (Phase(10.0, 0.0, 10.0), Phase(20.0, 10.0, 20.0))
    f = phase_figures(high, True, samples, batch, server, 0.2, 0.99, 40.0, 4.0, 2.0)
    assert (f.p99, f.over, f.windows) == (0.3, 1.0, 5)
    assert f.batch == 0.25 and f.server_cpu == 0.75 and f.reaction is None
    f = phase_figures(low, False, samples, batch, server, 0.2, 0.99, 40.0, 4.0, 2.0)
    assert (f.over, f.windows, f.server_cpu) == (0.0, 3, 0.25)  # windows from 4 s in


def test_the_load_schedule_is_poisson_at_each_phases_rate() -> None:
    due = schedule(phases("10:100,40:100"), seed=1)
    low = sum(t < 100 for t in due)
    assert 900 < low < 1100 and 3800 < len(due) - low < 4200
    assert due == sorted(due) and due == schedule(phases("10:100,40:100"), seed=1)
    assert not math.isclose(due[0], schedule(phases("10:100"), seed=2)[0])


def test_load_as_a_share_of_the_servers_capacity() -> None:
    assert of_capacity("20%:20,60%:30", 54.6) == "10.9:20,32.8:30"
    assert of_capacity("10:20,50%:5", 30.0) == "10.0:20,15.0:5"
    assert [p.rate for p in phases(of_capacity("20%:20,60%:30", 50.0))] == [10.0, 30.0]


def test_the_report_of_a_recorded_folder(tmp_path: Path) -> None:
    """A folder as demo.run writes it: batch alone, then one controlled run."""
    (tmp_path / "meta.json").write_text(
        json.dumps(
            {
                "phases": "10:10,20:10",
                "asked": "20%:10,40%:10",
                "capacity": 50.0,
                "one_at_a_time": 62.5,
                "cpus": 2,
                "slo": {"p99": "200ms", "window": "3s", "source": {"push": True}},
                "slo_asked": "10x",
                "setups": ["alone", "controller"],
            }
        )
    )
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "window.json").write_text(json.dumps({"from": 100.0, "to": 110.0}))
    (alone / "batch.progress").write_text("".join(f"{100 + t} {40 * t} 2\n" for t in range(11)))
    (alone / "batch_cpu.txt").write_text("".join(f"{100 + t} {1.6 * t}\n" for t in range(11)))
    (alone / "host_cpu.txt").write_text("".join(f"{100 + t} {1.9 * t}\n" for t in range(11)))
    run = tmp_path / "controller"
    run.mkdir()
    start = 1000.0  # monotonic time of the load's start; wall = monotonic + 5000
    (run / "window.json").write_text(
        json.dumps({"from": start, "to": start + 20, "wall_minus_mono": 5000.0})
    )
    lines = [f"# start_monotonic {start}"]
    lines += [f"{t / 10:.1f} 0.05" for t in range(100)]  # 10/s, 50 ms
    lines += [f"{10 + t / 20:.2f} {0.4 if t < 20 else 0.1}" for t in range(199)] + ["19.99 lost"]
    (run / "latency.csv").write_text("\n".join(lines) + "\n")
    # the server's own log: the slow start of the step was mostly the client's (150 ms of
    # 400), the last request never reached it, and "-2" is a calibration request, not one of
    # the load's
    served = ["-2 0.02"] + [f"{i} 0.03" for i in range(100)]
    served += [f"{100 + i} {0.15 if i < 20 else 0.05}" for i in range(199)]
    (run / "server.latency").write_text("\n".join(served) + "\n")
    (run / "batch.progress").write_text("".join(f"{start + t} {30 * t} 2\n" for t in range(21)))
    (run / "server_cpu.txt").write_text("".join(f"{start + t} {0.4 * t}\n" for t in range(21)))
    (run / "nxrd_cpu.txt").write_text("".join(f"{start + t} {0.05 * t}\n" for t in range(21)))
    (run / "batch_cpu.txt").write_text("".join(f"{start + t} {1.25 * t}\n" for t in range(21)))
    (run / "host_cpu.txt").write_text("".join(f"{start + t} {1.8 * t}\n" for t in range(21)))
    event = {"workload": "controller", "old": "share", "new": "static", "time": 5000 + start + 10.5}
    (run / "events.jsonl").write_text(json.dumps({**event, "cause": "chat slack -100%"}) + "\n")

    meta, figs, served, runs = figures(tmp_path)
    assert meta["alone"].rate == 40.0
    low, high = figs["controller"]
    assert (low.p99, low.over, low.batch, low.server_cpu) == (0.05, 0.0, 0.75, 0.4)
    assert low.nxrd_cpu == pytest.approx(0.05)
    # 2 s windows: the first (slow) and the last (a lost request) over the SLO; so the last
    # 1 s window is still over it: the step up is never recovered from
    assert (high.p99, high.over, high.reaction) == (0.4, 0.4, None)
    assert runs[0].actions == [(10.5, "share", "static", "chat slack -100%")]
    assert [(p.p99, p.over, p.windows, p.reaction) for p in served["controller"]] == [
        (0.03, 0.0, 3, None),
        (0.15, 0.2, 5, None),  # the lost request's window, and so never recovered
    ]
    text = table(meta, figs, served, runs)
    assert (
        "p99 SLO 200 ms (10 times the server's CPU per request); load 10/s for 10 s, then 20/s for 10 s (20%, 40% of the server's "
        "capacity alone, 50.0/s; 62.5/s one at a time); 2 CPUs; batch alone 40.0" in text
    )
    assert (
        "controller    10/s    50 ms  0.25      0% of 3    75%     94%   0.40   95%        -  0.05"
        in text
    )
    assert (
        "controller    20/s   400 ms  2.00     40% of 5    75%     94%   0.40   95%    never  0.05"
        in text
    )
    assert "    10.5 s  share -> static  (chat slack -100%)" in text
    lines = text.splitlines()
    head = lines.index("SERVED        LOAD      P99  /SLO     OVER SLO REACTION   CLIENT CPU/REQ")
    assert lines[head + 1 : head + 3] == [
        "controller    10/s    30 ms  0.15      0% of 3        -    50 ms 40.0 ms",
        "controller    20/s   150 ms  0.75     20% of 5    never   400 ms 20.1 ms",  # 4 s / 199
    ]
    # where the CPUs went: alone, batch does 25 blocks per CPU second; here 30/s on 1.25
    # CPUs is 24, so 96%; the host's 1.8 busy CPUs less server, nxrd and batch leave 0.10
    cpu = text.splitlines()
    head = cpu.index("CPUs          LOAD SERVER  BATCH  NXRD  REST  IDLE  WORK/CPU")
    assert cpu[head + 1 : head + 4] == [
        "alone            -      -   1.60     -  0.30  0.10      100%",
        "controller    10/s   0.40   1.25  0.05  0.10  0.20       96%",
        "controller    20/s   0.40   1.25  0.05  0.10  0.20       96%",
    ]
    plot(meta, runs, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_service_time_is_the_median_round_trip_of_single_requests() -> None:
    """Against a stand-in HTTP server that takes 20 ms per request and 200 ms for every
    tenth."""
    import http.server
    import threading
    import time

    from demo.loadgen import service_time

    served = [0]

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            served[0] += 1
            time.sleep(0.2 if served[0] % 10 == 9 else 0.02)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = service_time(server.server_address[1], 30)
    finally:
        server.shutdown()
        server.server_close()
    assert 0.02 <= got < 0.05  # the slow tenth does not move the median


def test_the_capped_set_up_holds_what_the_controllers_cap_25_rung_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from demo.run import capped
    from nxrd.controller.law import CAPS, LadderState, ladder, settings
    from nxrd.controller.spec import control_spec
    from nxrd.model.plan import Plan
    from nxrd.model.topology import load_topology
    from nxrd.plan import make_plan
    from nxrd.profile import parse_profile

    root = Path(__file__).resolve().parents[2]
    text = (root / "profiles/demo.toml").read_text()
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})  # the test VM
    topology = load_topology(root / "tests/fixtures/topologies/vm-2cpu.json")

    def plan(profile: str) -> Plan:
        return make_plan(parse_profile(profile, "demo.toml"), topology, "demo.toml")

    held = {w.name: w.files for w in plan(capped(text)).workloads}
    spec = control_spec(parse_profile(text, "demo.toml"), plan(text))
    rung = ladder(spec).index(f"cap-{min(CAPS)}%") + 1
    want = settings(LadderState(level=rung), spec).files
    assert held["embed"]["cpu.max"] == want["embed"]["cpu.max"] == "25000 100000"
    assert held["indexer"]["cpu.max"] == want["indexer"]["cpu.max"] == "10000 100000"  # floor
    assert held["chat"]["cpu.max"] == "max 100000"  # never a cap on the server


def test_the_demos_slo_can_be_set_in_requests_worth_of_the_servers_cpu() -> None:
    import tomllib

    from demo.run import with_slo

    text = (Path(__file__).resolve().parents[2] / "profiles/demo.toml").read_text()

    def slo(asked: str, capacity: float | None) -> dict[str, object]:
        return dict(tomllib.loads(with_slo(text, asked, capacity))["workloads"]["chat"]["slo"])

    # 40 requests per CPU second: 25 ms a request, the SLO ten of them
    assert slo("10x", 40.0) == {"p99": "250ms", "window": "3s", "source": {"push": True}}
    assert slo("150ms", None)["p99"] == "150ms"
    for asked, capacity, said in (
        ("10x", None, "demo: --slo 10x needs the server's capacity, measured first"),
        ("tenx", 40.0, "demo: --slo tenx: not a duration (200ms) or a positive multiple (10x)"),
        ("-3x", 40.0, "demo: --slo -3x: not a duration (200ms) or a positive multiple (10x)"),
        ("nanx", 40.0, "demo: --slo nanx: not a duration (200ms) or a positive multiple (10x)"),
        ("0ms", None, "demo: --slo 0ms: not a duration (200ms) or a positive multiple (10x)"),
    ):
        with pytest.raises(SystemExit, match=re.escape(said)):
            with_slo(text, asked, capacity)
    # only the server's own table is rewritten, whatever else says p99
    other = text + '\n[workloads.other]\ncommand = ["x"]\nclass = "latency-critical"\ncpus = 1\n'
    other += 'slo = { p99 = "200ms", source = { push = true } }\n'
    got = tomllib.loads(with_slo(other, "10x", 40.0))["workloads"]
    assert (got["chat"]["slo"]["p99"], got["other"]["slo"]["p99"]) == ("250ms", "200ms")
    # a target written as seconds, and a value TOML would not take as it is
    seconds = text.replace('p99 = "200ms"', "p99 = 0.2")
    assert slo("10x", 40.0) == dict(
        tomllib.loads(with_slo(seconds, "10x", 40.0))["workloads"]["chat"]["slo"]
    )
    with pytest.raises(SystemExit, match="not a duration"):
        with_slo(text, '2"00ms', None)
    with pytest.raises(SystemExit, match=re.escape("[workloads.chat], has no slo to set")):
        with_slo(text.replace("slo = {", "# slo = {"), "10x", 40.0)


def test_a_controller_set_up_can_carry_its_own_controller_settings() -> None:
    import tomllib

    from demo.run import tuned
    from nxrd.profile import parse_profile

    text = (Path(__file__).resolve().parents[2] / "profiles/demo.toml").read_text()
    assert tuned(text, "") == text
    got = tuned(text, "probe_after=0s+act_below=0.1+max_step=2")
    want = tomllib.loads(text)
    controller = {**want["controller"], "probe_after": "0s", "act_below": 0.1, "max_step": 2}
    assert tomllib.loads(got) == {**want, "controller": controller}
    assert parse_profile(got).controller.probe_after == 0.0
    # a header with a comment, an indented key; a profile with no [controller] table
    spaced = text.replace("[controller]\n", "[controller]   # the law\n").replace(
        "cooldown =", "  cooldown ="
    )
    assert tomllib.loads(tuned(spaced, "cooldown=2s"))["controller"]["cooldown"] == "2s"
    bare = '[host]\nreserved_cpus = "0"\n[workloads.w]\ncommand = ["x"]\n'
    assert tomllib.loads(tuned(bare, "share=false+period=1s")) == {
        **tomllib.loads(bare),
        "controller": {"share": False, "period": "1s"},
    }
    for settings, said in (
        ("bogus=1", "demo: 'bogus=1' is not KEY=VALUE of a [controller] setting"),
        ("act_below=.5", "demo: act_below=.5: controller.act_below: "),
        ("act_below", "demo: 'act_below' is not KEY=VALUE of a [controller] setting"),
        ("act_below=0.5", "demo: act_below=0.5: controller.relax_above: must be above"),
    ):
        with pytest.raises(SystemExit, match=re.escape(said)):
            tuned(text, settings)


def test_set_ups_and_the_slo_are_checked_before_a_vm_boots_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from demo import run

    monkeypatch.chdir(Path(__file__).resolve().parents[2])

    def check(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["run", "--check", *args])
        run.main()

    check("--setups", "solo,pinned,controller+act_below=0.1", "--slo", "10x")  # no --out
    check("--setups", "pinned", "--phases", "20%:20,60%:30,12.5:20")
    # a share is checked again once the server's capacity is measured
    assert run.checked_phases("20%:20,2%:30", 5.0) == "20%:20,2%:30"
    with pytest.raises(SystemExit, match=re.escape("'1%:30' is 0.05/s of the measured 5.0/s")):
        run.checked_phases("20%:20,1%:30", 5.0)
    for args, said in (
        (("--setups", "pinned,controler"), "demo: unknown set-up 'controler'"),
        (("--setups", "pinned+act_below=0.1"), "only the controller set-up takes settings"),
        (("--setups", "controller+act_below=2"), "controller.act_below: input should be"),
        (("--setups", "pinned", "--slo", "fast"), "--slo"),
        (("--setups", "pinned", "--phases", "20%:20,60%"), "--phases: '60%' is not RATE:SECONDS"),
        (("--setups", "pinned", "--phases", "0:20"), "--phases: '0:20' is not RATE:SECONDS"),
        (("--setups", "pinned", "--phases", "0.04:20"), "'0.04:20' is not RATE:SECONDS"),
        (("--setups", "pinned", "--phases", "inf:20"), "'inf:20' is not RATE:SECONDS"),
        (("--setups", "pinned", "--phases", "20%:inf"), "'20%:inf' is not RATE:SECONDS"),
    ):
        with pytest.raises(SystemExit, match=re.escape(said)):
            check(*args)


def test_nxrd_runs_the_demos_workloads_where_they_find_the_demo_package(
    tmp_path: Path,
) -> None:
    """The demo is not installed with nxr, and nxrd gives a workload a clean environment:
    the harness runs each workload in the folder that holds the demo package (cwd), where
    `python -m demo.X` with nothing but PATH finds it. A cwd of the profile's own is kept."""
    import os
    import subprocess
    import sys

    from demo.run import in_root
    from nxrd.profile import parse_profile

    root = Path(__file__).resolve().parents[2]
    text = in_root((root / "profiles/demo.toml").read_text())
    workloads = parse_profile(text).workloads
    assert {w.cwd for w in workloads.values()} == {str(root)} and len(workloads) == 3
    done = subprocess.run(
        [sys.executable, "-m", "demo.figures"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=workloads["chat"].cwd,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    own = '[workloads.w]\ncommand = ["true"]\ncwd = "/srv"\n'
    assert in_root(own) == own


def test_the_weights_set_up_writes_its_cgroups_through_the_kernel_layer() -> None:
    """The "weights" set-up (no nxr): static cpu.weight groups under the host's root, made
    and removed through nxrd's cgroupfs layer (here its in-memory fake)."""
    from demo.run import WEIGHTS, make_weight_groups, remove_weight_groups
    from nxrd.kernel.cgroupfs import FakeCgroupFS

    fs = FakeCgroupFS()
    for _ in range(2):  # a second run finds the groups there
        assert make_weight_groups(fs) == WEIGHTS
    assert fs.writes[:5] == [
        ("", "cgroup.subtree_control", "+cpu"),
        (WEIGHTS, "cgroup.subtree_control", "+cpu"),
        (f"{WEIGHTS}/server", "cpu.weight", "1000"),
        (f"{WEIGHTS}/batch", "cpu.weight", "50"),
        (f"{WEIGHTS}/bg", "cpu.idle", "1"),
    ]
    assert fs.writes[5:] == fs.writes[:5]
    remove_weight_groups(fs, WEIGHTS)
    assert list(fs.dirs) == [""]


def test_the_server_times_each_request_from_its_send_and_logs_and_pushes_it(
    tmp_path: Path,
) -> None:
    """The real demo server, run as the profile runs it: a request stamped as sent 1 s ago
    took at least 1 s (time in the backlog counts), and what it logs is what it pushes to
    nxrd."""
    import http.client
    import os
    import socket
    import subprocess
    import sys
    import time

    from demo.loadgen import bodies, wait_for_server

    pushed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pushed.bind(str(tmp_path / "latency.sock"))
    pushed.settimeout(10)
    port = free_port()  # the server binds it next
    env = {**os.environ, "NXR_LATENCY_SOCKET": str(tmp_path / "latency.sock")}
    env["NXR_WORKLOAD"] = "chat"
    log = tmp_path / "run" / "server.latency"
    argv = [sys.executable, "-m", "demo.ocr_server", "--task", "orient", "--port", str(port)]
    server = subprocess.Popen(
        [*argv, "--log", str(log)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],  # where -m finds the demo package
        stdout=subprocess.DEVNULL,
    )

    def post(rid: str, sent: float) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/ocr", bodies()[0], {"X-Request-Id": rid, "X-Sent": f"{sent:.6f}"})
        status = conn.getresponse().status
        conn.close()
        return status

    try:
        wait_for_server(port, 60)  # ONNX Runtime's start
        assert post("7", time.monotonic() - 1) == 200
        assert post("8", time.monotonic()) == 200
        end = time.monotonic() + 10  # it answers first, then writes the line
        while "\n8 " not in "\n" + log.read_text() and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        server.kill()
        server.wait()
    rows = [line.split() for line in log.read_text().splitlines()]
    assert [r[0] for r in rows][-2:] == ["7", "8"]
    took = {rid: float(v) for rid, v in rows}
    assert took["7"] >= 1.0 and took["8"] < 1.0
    # the reporter sends at once, then gathers for a while: the first is out
    first = pushed.recv(65536).decode().splitlines()
    assert first == [f"chat {v}" for _, v in rows[: len(first)]] and first
    pushed.close()


def test_the_servers_capacity_is_what_it_answers_per_cpu_second(tmp_path: Path) -> None:
    """A stand-in server that spends 5 ms of CPU on each request: under load at half its
    one-at-a-time rate it is idle about half the time, and its capacity is still about
    200/s, not the rate it was sent."""
    import sys

    from demo.run import calibrate

    server = tmp_path / "server.py"
    server.write_text(
        "import http.server, sys, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        self.rfile.read(int(self.headers['Content-Length']))\n"
        "        end = time.thread_time() + 0.005\n"
        "        while time.thread_time() < end:\n"
        "            pass\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', '0')\n"
        "        self.end_headers()\n"
        "    def log_message(self, *a):\n"
        "        pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    port = free_port()
    capacity, one_at_a_time = calibrate(
        [sys.executable, str(server), str(port)], tmp_path, port, 50, 4.0
    )
    assert 100 < capacity <= 210  # 5 ms a request, a little for HTTP, 10 ms ticks
    assert one_at_a_time <= 205
    rows = (tmp_path / "calibration.csv").read_text().splitlines()[1:]
    assert rows and not any(r.endswith("lost") for r in rows)
    assert len(rows) / 4.0 < 0.75 * capacity  # per CPU second, not per second sent


def test_calibrating_a_server_that_dies_says_so(tmp_path: Path) -> None:
    import sys

    from demo.run import calibrate

    server = tmp_path / "server.py"  # as when its port is taken
    server.write_text("raise SystemExit(3)\n")
    port = free_port()
    with pytest.raises(SystemExit, match="the server exited \\(3\\) while calibrating"):
        calibrate([sys.executable, str(server), str(port)], tmp_path, port, 5, 1.0)


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_repeated_runs_are_judged_together(tmp_path: Path) -> None:
    from demo.repeats import summary

    def setup(
        run: Path, name: str, blocks: tuple[float, float], slow: bool, late: bool = False
    ) -> None:
        folder = run / name
        folder.mkdir(parents=True)
        start = 1000.0
        lines = [f"# start_monotonic {start}"] + [f"{t / 10:.1f} 0.05" for t in range(100)]
        for t in range(200):  # slow: 10-11 s, right after the step; late: 16-17 s
            bad = (slow and t < 20) or (late and 120 <= t < 140)
            lines.append(f"{10 + t / 20:.2f} {0.4 if bad else 0.05}")
        (folder / "latency.csv").write_text("\n".join(lines) + "\n")
        done = [
            blocks[0] * t if t <= 10 else blocks[0] * 10 + blocks[1] * (t - 10) for t in range(21)
        ]
        (folder / "batch.progress").write_text(
            "".join(f"{start + t} {d} 1\n" for t, d in enumerate(done))
        )

    runs = []
    for run, order, controller in (
        ("a", ["pinned", "controller"], (45.0, 15.0)),
        ("b", ["controller", "pinned"], (60.0, 30.0)),
    ):
        folder = tmp_path / run
        setup(folder, "pinned", (30.0, 30.0), slow=True)
        setup(folder, "controller", controller, slow=run == "a", late=run == "b")
        meta = {
            "phases": "10:10,20:10",
            "asked": "20%:10,40%:10",
            "capacity": 50.0,
            "cpus": 2,
            "slo": {"p99": "200ms", "window": "3s", "source": {"push": True}},
            "setups": order,
        }
        (folder / "meta.json").write_text(json.dumps(meta))
        runs.append(folder)
    text = summary(runs).splitlines()
    assert "a    pinned,controller             10/s, 20/s (capacity 50.0/s, SLO 200 ms)" in text
    # a 1 s burst at the step: one of the 5 windows after it, in each run pinned, in a
    # with the controller, and one later in b (3 windows before the step, from 4 s in)
    assert "pinned       1  1   2 of 16 (87.5% within)" in text
    assert "controller   1  1   2 of 16 (87.5% within)" in text
    # from 4 s after the step: only the controller's late burst in b
    settled = text.index("THE SAME, LEAVING OUT THE 4 S AFTER EACH LOAD CHANGE")
    assert text[settled + 1 : settled + 3] == [
        "pinned       0  0   0 of 12 (100.0% within)",
        "controller   0  1   1 of 12 (91.7% within)",
    ]
    # each run's step: the burst right after it is over within 1 s; b's late one at 16 s
    reaction = text.index(next(line for line in text if line.startswith("REACTION TO EACH")))
    assert text[reaction + 1 : reaction + 3] == [
        "pinned      1.0 1.0   worst 1.0 s",
        "controller  1.0 7.0   worst 7.0 s",
    ]
    # then over the whole load: the controller's 600 blocks in a and 900 in b, pinning's 600
    assert (
        "controller  20% 1.50 2.00 (median 1.75),  40% 0.50 1.00 (median 0.75),  "
        "all 1.00 1.50 (median 1.25)" in text
    )


def test_the_servers_cpu_per_request_is_counted_by_the_rung_it_ran_under() -> None:
    from demo.repeats import _cost_by_rung
    from demo.report import Run

    run = Run("controller")
    run.samples = [(t / 10, 0.05) for t in range(200)] + [(5.0, math.inf)]  # 10/s, one lost
    run.server = [(t / 2, 0.4 * t / 2) for t in range(41)]  # 0.4 CPU s a second throughout
    run.actions = [(6.0, "static", "cap-75%", ""), (8.0, "cap-75%", "cap-50%", "")]
    run.actions += [(10.0, "cap-50%", "freeze-background", ""), (12.0, "x", "static", "")]
    got = _cost_by_rung(run, 4.0, 14.0)
    assert {g: (round(c, 6), n) for g, (c, n) in got.items()} == {
        "static": (1.6, 40),  # 4-6 s and 12-14 s: 40 ms a request
        "capped": (1.6, 40),
        "frozen": (0.8, 20),
    }
