"""Profiles: what a valid one gives, and what each mistake reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrd.errors import ProfileError
from nxrd.profile import load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = '[workloads.chat]\ncommand = ["serve"]\n'
# a workload whose SLO the controller keeps
SERVED = '[workloads.chat]\ncommand = ["serve"]\nclass = "latency-critical"\ncpus = 1\n'


def errors(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.toml")
    return info.value.lines()


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.toml")))
def test_example_profiles_are_valid(path: Path) -> None:
    profile = load_profile(path)
    assert profile.workloads


def test_defaults() -> None:
    wl = parse_profile(MINIMAL).workloads["chat"]
    assert wl.workload_class == "interactive"
    assert not wl.is_exclusive
    assert wl.threads == "auto"
    assert wl.restart.policy == "on-failure" and wl.restart.delay == 1.0
    assert wl.stop.signal == "SIGTERM"


def test_latency_critical_defaults_to_exclusive() -> None:
    p = parse_profile('[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\ncpus=2\n')
    assert p.workloads["chat"].is_exclusive


def test_background_is_idle_unless_given_a_weight() -> None:
    p = parse_profile(
        '[workloads.a]\ncommand=["x"]\nclass="background"\n'
        '[workloads.b]\ncommand=["x"]\nclass="background"\ncpu_weight=5\n'
    )
    assert p.workloads["a"].is_idle and not p.workloads["b"].is_idle


def test_typo_suggests_the_closest_key() -> None:
    assert errors(MINIMAL + 'memroy_max = "4G"\n') == [
        "p.toml: workloads.chat.memroy_max: unknown key (did you mean 'memory_max'?)"
    ]
    assert errors('[workload.chat]\ncommand=["x"]\n') == [
        "p.toml: workload: unknown key (did you mean 'workloads'?)"
    ]
    assert "did you mean 'policy'" in errors(MINIMAL + 'restart = {polcy = "no"}\n')[0]


def test_wrong_units_name_the_field() -> None:
    (line,) = errors(MINIMAL + 'memory_max = "4GB"\n')
    assert line.startswith("p.toml: workloads.chat.memory_max: unknown size unit 'GB'")
    (line,) = errors(MINIMAL + 'stop = {timeout = "10 sec"}\n')
    assert line.startswith("p.toml: workloads.chat.stop.timeout: not a duration")


def test_toml_types_are_not_coerced() -> None:
    (line,) = errors(MINIMAL + 'cpus = "2"\n')
    assert line == "p.toml: workloads.chat.cpus: input should be a valid integer (got '2')"


def test_bad_names_are_refused_before_they_reach_a_path() -> None:
    for name in ['"../x"', '"Chat"', '"a/b"', '"-x"', '"' + "a" * 64 + '"']:
        (line,) = errors(f'[workloads.{name}]\ncommand=["x"]\n')
        assert "invalid workload name" in line and "cgroup directory name" in line


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    lines = errors(
        '[workloads.a]\ncommand = "serve"\nclass = "realtime"\n'
        '[workloads.b]\ncommand = ["x"]\ncpus = 0\n'
    )
    assert [line.split(": ")[1] for line in lines] == [
        "workloads.a.command",
        "workloads.a.class",
        "workloads.b.cpus",
    ]


def test_cross_field_rules() -> None:
    cases = {
        'cpus = 2\ncpuset = "2-3"': "workloads.chat.cpus: set either cpus or cpuset, not both",
        'memory_max = "1G"\nmemory_high = "2G"': "workloads.chat.memory_high: 2G is above memory_max (1G)",
        'pool = "gpu"': "workloads.chat.pool: no pool named 'gpu' (pools: none declared)",
        "pool_slots = 2": "workloads.chat.pool_slots: set without pool",
        'after = ["chat"]': "workloads.chat.after[0]: a workload cannot wait for itself",
        'after = ["nope"]': "workloads.chat.after[0]: no workload named 'nope'",
        'gpu_memory = "4G"': "workloads.chat.gpu_memory: set without gpus",
        'cwd = "srv"': "workloads.chat.cwd: must be an absolute path (got 'srv')",
        'ready = {timeout = "5s"}': "workloads.chat.ready: give exactly one of http, tcp, exec",
        "gpus = [0, 0]": "workloads.chat.gpus: lists the same GPU twice",
        'gpus = 1\nenv = {CUDA_VISIBLE_DEVICES = "0"}': "workloads.chat.env: CUDA_VISIBLE_DEVICES is set by nxr from gpus; remove it from env",
        'gpus = 1\nenv = {NVIDIA_VISIBLE_DEVICES = "all"}': "workloads.chat.env: NVIDIA_VISIBLE_DEVICES is set by nxr from gpus; remove it from env",
    }
    for body, expected in cases.items():
        assert errors(MINIMAL + body + "\n") == [f"p.toml: {expected}"], body


def test_latency_critical_is_never_capped() -> None:
    (line,) = errors(
        '[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\ncpus=2\ncpu_max="150%"\n'
    )
    assert line.startswith("p.toml: workloads.chat.cpu_max: latency-critical workloads are never")


def test_exclusive_needs_a_size() -> None:
    (line,) = errors('[workloads.chat]\ncommand=["x"]\nclass="latency-critical"\n')
    assert "an exclusive workload needs cpus or cpuset" in line


def test_after_cycles_are_named() -> None:
    lines = errors(
        '[workloads.a]\ncommand=["x"]\nafter=["b"]\n[workloads.b]\ncommand=["x"]\nafter=["c"]\n'
        '[workloads.c]\ncommand=["x"]\nafter=["a"]\n'
    )
    assert lines == ["p.toml: workloads.c.after: dependency cycle: a -> b -> c -> a"]


def test_slo_needs_exactly_one_source_and_target() -> None:
    assert errors(SERVED + '[workloads.chat.slo]\np99 = "200ms"\n') == [
        "p.toml: workloads.chat.slo.source: required key is missing"
    ]
    lines = errors(SERVED + '[workloads.chat.slo]\np99 = "200ms"\nsource = {}\n')
    assert lines == [
        "p.toml: workloads.chat.slo.source: give exactly one of prometheus, probe, push = true,"
        " front = true"
    ]
    lines = errors(SERVED + '[workloads.chat.slo]\np99 = "200ms"\nsource = {front = true}\n')
    assert lines == [
        "p.toml: workloads.chat.slo.source.front: needs serve: the front whose requests it times"
    ]
    lines = errors(SERVED + "[workloads.chat.slo]\nsource = {push = true}\n")
    assert "give exactly one target of p50, p90, p95, p99" in lines[0]
    prom = 'source.prometheus = {url = "http://127.0.0.1:8000/metrics"%s}\n'
    slo = SERVED + '[workloads.chat.slo]\np99 = "200ms"\n'
    assert errors(slo + prom % "") == [
        "p.toml: workloads.chat.slo.source.prometheus: give exactly one of metric, preset"
    ]
    assert errors(slo + prom % ', metric = "x", preset = "vllm"') == [
        "p.toml: workloads.chat.slo.source.prometheus: give exactly one of metric, preset"
    ]
    (line,) = errors(slo + prom % ', preset = "sglang"')
    assert line.startswith("p.toml: workloads.chat.slo.source.prometheus.preset: ")
    parse_profile(slo + prom % ', preset = "triton"')  # valid


def test_an_slo_of_zero_is_refused_before_the_controller_divides_by_it() -> None:
    slo = SERVED + "[workloads.chat.slo]\nsource = {push = true}\n"
    assert errors(slo + 'p99 = "0ms"\n') == [
        "p.toml: workloads.chat.slo.p99: input should be greater than 0 (got '0ms')"
    ]
    (line,) = errors(slo + 'p95 = "100ms"\nwindow = "0s"\n')
    assert line.startswith("p.toml: workloads.chat.slo.window: input should be greater than 0")


def test_controller_settings_that_would_flap_or_walk_down_are_refused() -> None:
    assert errors(MINIMAL + "[controller]\nact_below = 0.3\nrelax_above = 0.3\n") == [
        "p.toml: controller.relax_above: must be above act_below (0.3 <= 0.3): the band "
        "between them is where the controller holds its rung"
    ]
    assert errors(MINIMAL + '[controller]\ncooldown = "2s"\nprobe_after = "1s"\n') == [
        'p.toml: controller.probe_after: must be "0s" (no tries) or at least the cooldown (1s < 2s)'
    ]
    parse_profile(MINIMAL + '[controller]\ncooldown = "2s"\nprobe_after = "0s"\n')  # no tries
    # said alongside a workload's own mistake, in the one pass
    lines = errors(MINIMAL + "pids_max = -1\n[controller]\nact_below = 0.3\nrelax_above = 0.3\n")
    assert [line.split(":")[1].strip() for line in lines] == [
        "workloads.chat.pids_max",
        "controller.relax_above",
    ]


def test_explicit_exclusive_cpusets_must_not_overlap() -> None:
    lines = errors(
        '[workloads.a]\ncommand=["x"]\nexclusive=true\ncpuset="2-3"\n'
        '[workloads.b]\ncommand=["x"]\ncpuset="3-4"\n'
    )
    assert lines == [
        "p.toml: workloads.b.cpuset: CPUs 3 are also given to 'a', and one of the two is exclusive"
    ]


def test_stop_signal_names() -> None:
    p = parse_profile(MINIMAL + 'stop = {signal = "int"}\n')
    assert p.workloads["chat"].stop.signal == "SIGINT"
    assert "cannot be the stop signal" in errors(MINIMAL + 'stop = {signal = "KILL"}\n')[0]


def test_toml_syntax_error_has_a_line_number() -> None:
    (line,) = errors("[workloads.chat\n")
    assert line.startswith("p.toml: invalid TOML:") and "line 1" in line


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "missing.toml")
    assert info.value.lines() == [
        f"{tmp_path}/missing.toml: cannot read profile: No such file or directory"
    ]


def test_cross_field_problems_show_alongside_structural_ones() -> None:
    lines = errors(
        '[workloads.a]\ncommand = "oops"\n'
        '[workloads.b]\ncommand = ["x"]\nafter = ["a", "c"]\npool = "nope"\n'
        '[workloads.c]\ncommand = ["x"]\nafter = ["b"]\n'
    )
    assert lines == [
        "p.toml: workloads.a.command: must be a list of arguments, e.g. "
        '["python", "serve.py"] (got the string \'oops\')',
        "p.toml: workloads.b.pool: no pool named 'nope' (pools: none declared)",
        # 'a' is declared (only invalid), so b's after = ["a"] is not reported as missing
        "p.toml: workloads.c.after: dependency cycle: b -> c -> b",
    ]


def test_a_trailing_newline_does_not_sneak_into_a_name() -> None:
    (line,) = errors('[workloads."chat\\n"]\ncommand = ["x"]\n')
    assert line.startswith('p.toml: workloads."chat\\n": invalid workload name')
    (line,) = errors(MINIMAL + 'env = {"A\\n" = "1"}\n')
    assert line == "p.toml: workloads.chat.env: 'A\\n' is not a valid environment variable name"


def test_values_the_kernel_or_exec_would_refuse() -> None:
    (line,) = errors(MINIMAL.replace('["serve"]', '["serve\\u0000x"]'))
    assert line == "p.toml: workloads.chat.command: an argument contains a NUL byte"
    (line,) = errors(MINIMAL + 'user = "svc\\u0000x"\n')
    assert line == "p.toml: workloads.chat.user: 'svc\\x00x' is not a valid user name"
    (line,) = errors(MINIMAL + 'group = " "\n')
    assert line == "p.toml: workloads.chat.group: ' ' is not a valid group name"
    (line,) = errors(MINIMAL + "pids_max = 4194305\n")
    assert line.startswith(
        "p.toml: workloads.chat.pids_max: input should be less than or equal to 4194304"
    )
    (line,) = errors(MINIMAL + 'memory_max = "' + "9" * 40 + 'T"\n')
    assert "is too large" in line


def test_cross_field_rules_still_run_on_a_workload_with_a_type_error() -> None:
    lines = errors(
        '[workloads.a]\ncommand = ["x"]\ncpus = "2"\nmemory_min = "2G"\nmemory_max = "1G"\n'
        'after = ["b"]\n[workloads.b]\ncommand = ["x"]\ncpus = "2"\nafter = ["a"]\n'
    )
    assert [line.split(": ")[1] for line in lines] == [
        "workloads.a.cpus",
        "workloads.b.cpus",
        "workloads.a.memory_min",
        "workloads.b.after",
    ]
    # A key that is there but invalid is not reported as missing.
    lines = errors(
        '[workloads.a]\ncommand = ["x"]\nclass = "latency-critical"\ncpus = "2"\n'
        'gpus = "x"\ngpu_memory = "1G"\n'
    )
    assert [line.split(": ")[1] for line in lines] == ["workloads.a.cpus", "workloads.a.gpus"]


def test_a_restart_policy_left_unset_is_the_classs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The class policy (nxrd/model/classes.py) is read, not a copy of it."""
    import dataclasses

    from nxrd.model import classes

    batch = dataclasses.replace(classes.CLASSES["batch"], restart="always")
    monkeypatch.setitem(classes.CLASSES, "batch", batch)
    text = (
        '[workloads.a]\ncommand = ["x"]\nclass = "batch"\n'
        '[workloads.b]\ncommand = ["x"]\nclass = "batch"\nrestart = { policy = "no" }\n'
        '[workloads.c]\ncommand = ["x"]\nclass = "interactive"\n'
    )
    p = parse_profile(text, "p.toml")
    assert [p.workloads[n].restart.policy for n in "abc"] == ["always", "no", "on-failure"]


@pytest.mark.parametrize(
    ("value", "address"),
    [("9464", "127.0.0.1:9464"), ('"9464"', "127.0.0.1:9464"), ('"0.0.0.0:9464"', "0.0.0.0:9464")],
)
def test_a_metrics_port_alone_means_the_loopback_address(value: str, address: str) -> None:
    p = parse_profile(f'[host]\nmetrics = {value}\n[workloads.a]\ncommand = ["x"]\n', "p.toml")
    assert p.host.metrics == address


@pytest.mark.parametrize("value", ['"nine"', '"70000"', '":9464"', "0"])
def test_a_metrics_address_that_is_not_one_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(f'[host]\nmetrics = {value}\n[workloads.a]\ncommand = ["x"]\n', "p.toml")
    assert e.value.lines()[0].startswith("p.toml: host.metrics: ")
    assert len(e.value.lines()) == 1


def test_an_slo_on_a_class_the_controller_does_not_protect_is_refused() -> None:
    """Silently ignored before: the operator believed the embedder's p99 was kept."""
    text = (
        '[workloads.embed]\ncommand = ["x"]\nclass = "interactive"\n'
        '[workloads.embed.slo]\np99 = "100ms"\nsource = { push = true }\n'
    )
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "p.toml")
    assert e.value.lines() == [
        "p.toml: workloads.embed.slo: the controller keeps the SLOs of latency-critical "
        "workloads only, and this one is interactive; make it latency-critical or drop slo"
    ]


def test_zero_gpus_is_refused_and_says_what_omitting_gpus_does() -> None:
    (line,) = errors(MINIMAL + "gpus = 0\n")
    assert line == (
        "p.toml: workloads.chat.gpus: 0 GPUs: omit gpus for a workload without GPUs "
        "(it sees none of the host's)"
    )


def test_thousands_of_nested_arrays_are_a_profile_error_not_a_crash() -> None:
    (line,) = errors("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert line == "p.toml: invalid TOML: nested too deeply"


def test_nxrd_refuses_profiles_another_user_may_edit(tmp_path: Path) -> None:
    """nxrd runs a profile's commands as root's choice of user: a profile file (or a
    directory of them) that anyone else may change is their way to root (#32 item 1)."""
    import os

    from nxrd.daemon.reconfigure import starting_files
    from nxrd.profile.load import read_profiles

    d = tmp_path / "profiles"
    d.mkdir(mode=0o755)
    f = d / "chat.toml"
    f.write_text('[workloads.chat]\ncommand = ["serve"]\n')
    f.chmod(0o644)
    assert [name for name, _ in read_profiles([str(d)], guarded=True)] == [str(f)]
    f.chmod(0o666)
    with pytest.raises(ProfileError) as e:
        starting_files([str(d)], tmp_path, tmp_path / "state.json")
    assert e.value.lines() == [
        f"{f}: writable by group or others (mode 0666): whoever may edit it may run anything"
        " as root"
    ]
    f.chmod(0o644)
    d.chmod(0o777)  # anyone may add a file to it
    with pytest.raises(ProfileError, match="writable by group or others"):
        read_profiles([str(d)], guarded=True)
    d.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(f, 65534, 65534)
        with pytest.raises(ProfileError, match="owned by uid 65534, not root"):
            read_profiles([str(f)], guarded=True)
    assert read_profiles([str(f)])  # nxrctl validate and plan read anyone's files
