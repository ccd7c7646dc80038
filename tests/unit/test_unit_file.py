"""What the systemd unit must say for nxrd to run many workloads and say why it does not
(systemd-analyze verifies it in the kernel tier; the package test installs its docs)."""

from __future__ import annotations

from pathlib import Path

UNITS = Path(__file__).resolve().parents[2] / "units"
UNIT = UNITS / "nxrd.service"


def settings(unit: Path = UNIT) -> dict[str, str]:
    out = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_limits_fit_hundreds_of_workloads() -> None:
    s = settings()
    assert int(s["LimitNOFILE"]) >= 65536  # six kept-open counter files per workload
    # the workloads' unit's cgroup holds every workload's threads
    assert settings(UNITS / "nxr-workloads.service")["TasksMax"] == "infinity"


def test_the_workloads_live_in_a_unit_that_outlives_nxrds_restarts() -> None:
    """systemd puts a restarted nxrd into its unit's cgroup, which the kernel refuses while
    that cgroup passes controllers on to running workloads (219/CGROUP): the workloads'
    tree is another unit's, delegated, and nxrd names it. The kernel tier restarts nxrd
    into its own cgroup after kill -9 (test_systemd_integration.py)."""
    nxrd, workloads = settings(), settings(UNITS / "nxr-workloads.service")
    assert "Delegate" not in nxrd and workloads["Delegate"] == "yes"
    assert nxrd["Requires"] == "nxr-workloads.service"
    assert "nxr-workloads.service" in nxrd["After"].split()
    assert nxrd["ExecStart"].endswith("--cgroup-root unit:nxr-workloads.service")


def test_nxr_runs_beside_the_slices_it_keeps_off_exclusive_cores() -> None:
    """nxrd narrows system.slice's and user.slice's AllowedCPUs=: nxr itself is in a
    top-level slice of its own, and the machine gets its CPUs back even after a crash."""
    nxrd, workloads = settings(), settings(UNITS / "nxr-workloads.service")
    assert nxrd["Slice"] == workloads["Slice"] == "nxr.slice"
    assert (UNITS / "nxr.slice").exists()
    assert nxrd["ExecStopPost"] == "/usr/bin/nxrd restore-host"


def test_a_start_without_a_profile_is_not_silently_skipped() -> None:
    assert not any(k.startswith("Condition") for k in settings())


def test_the_state_directory_is_roots_only() -> None:
    # nxrd keeps the files (logs, env values in state files) 0600 and directories below 0700
    assert settings()["StateDirectoryMode"] == "0750"
    # what nxrd creates is private unless given a mode on purpose; the kernel tier runs
    # nxrd under this umask (tests/kernel/test_daemon.py, Nxrd.start)
    assert settings()["UMask"] == "0077"


def test_the_documentation_is_the_installed_one() -> None:
    assert settings()["Documentation"].startswith("file:/usr/share/doc/nxr/")
