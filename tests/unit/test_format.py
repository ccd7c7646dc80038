"""nxrctl's pure formatters and explain's rows, on plain data."""

from __future__ import annotations

from nxrd.api.explain import explain
from nxrd.cli.format import changes_table, explain_text, status_row, topology_text
from nxrd.ledger import Write
from nxrd.model.topology import Topology


def test_explain_rows_join_profile_plan_ledger_and_kernel() -> None:
    spec = {"cpus": 2, "cpuset": None, "exclusive": None, "memory_max": None, "class": "batch"}
    rows = explain(
        spec,
        {"cpuset.cpus": "0-1", "memory.max": "max", "memory.oom.group": "1"},
        {"cpuset.cpus": Write("0-1", "nxrctl apply by uid 0 (p.toml)", 100.0)},
        {"cpuset.cpus": "0-1", "cpuset.cpus.effective": "0", "memory.max": "max"},
    )
    by = {r["resource"]: r for r in rows}
    assert by["cpuset.cpus"]["profile"] == "cpus = 2"
    assert by["cpuset.cpus"]["by"] == "nxrctl apply by uid 0 (p.toml)"
    assert by["cpuset.cpus"]["effective"] == "0"
    assert by["memory.max"]["profile"] == "not set: nxr's default"
    assert by["memory.max"]["written"] is None  # nobody wrote it (yet) as far as nxrd knows
    assert by["memory.oom.group"]["profile"] == "always set by nxr"
    text = explain_text(
        {
            "name": "w",
            "class": "batch",
            "state": "ready",
            "cgroup": "batch/w",
            "resources": rows,
            "gpus": {"profile": None, "planned": [], "env": {}},
            "threads": {"profile": None, "planned": 2},
        }
    )
    assert "cpuset.cpus: the kernel grants 0 (effective)" in text
    assert text.splitlines()[2].split()[:3] == ["RESOURCE", "PROFILE", "PLANNED"]


def test_changes_table_says_how_each_change_lands() -> None:
    assert changes_table([]) == "no changes"
    text = changes_table(
        [
            {
                "workload": "a",
                "what": "memory.max",
                "old": str(1 << 30),
                "new": "max",
                "effect": "live",
            },
            {"workload": "b", "what": "command", "old": "[1]", "new": "[2]", "effect": "restart"},
        ]
    )
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["a", "memory.max"] and lines[1].endswith("live, no restart")
    assert "1073741824 (1G)" in lines[1]
    assert lines[2].endswith("restarts the workload")


def test_status_latency_and_pressure_columns() -> None:
    w = {
        "name": "chat",
        "class": "latency-critical",
        "state": "ready",
        "pid": 7,
        "cpus": "0",
        "cpu_percent": 50.0,
        "throttled_percent": 0.0,
        "memory_current": 1 << 20,
        "memory_max": None,
        "cpu_pressure": {"some_avg10": 1.25},
        "memory_pressure": {"some_avg10": 0.0},
        "gpus": [0],
        "restarts": 1,
        "slo_percentile": "p99",
        "slo_seconds": 0.2,
        "latency_seconds": None,
        "reason": "ok",
    }
    row = status_row(w)
    assert row[5:12] == ["50", "0", "1M/max", "1.2/0", "0", "1", "-/p99 200ms"]


def test_topology_summary_says_what_nxrd_may_plan_on(vm2: Topology) -> None:
    topo = vm2
    assert "reach" not in topology_text(topo)
    limited = topo.model_copy(update={"cgroup": topo.cgroup.model_copy(update={"cpus": "1"})})
    assert topology_text(limited).splitlines()[-1] == (
        "reach: planning on CPUs 1 of the 0-1 online: nxrd's cgroup may run only on those "
        "(cpuset.cpus.effective, a parent's limit such as systemd's AllowedCPUs=)"
    )
    nowhere = topo.model_copy(update={"cgroup": topo.cgroup.model_copy(update={"cpus": "7"})})
    assert (
        topology_text(nowhere)
        .splitlines()[-1]
        .startswith("reach: nxrd's cgroup may run only on CPUs 7, none of them online")
    )


def test_topology_summary_names_cores_split_by_the_reach(smt16: Topology) -> None:
    # CPU N's sibling thread is N+16: under 0-7,16-19, cores 4-7 keep 20-23 outside
    limited = smt16.model_copy(
        update={"cgroup": smt16.cgroup.model_copy(update={"cpus": "0-7,16-19"})}
    )
    assert topology_text(limited).splitlines()[-1] == (
        "reach: CPUs 4-7 share cores with CPUs beyond it (20-23): exclusive workloads get "
        "none of them"
    )
    whole = smt16.model_copy(
        update={"cgroup": smt16.cgroup.model_copy(update={"cpus": "0-3,16-19"})}
    )
    assert "share cores" not in topology_text(whole)
