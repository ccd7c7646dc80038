"""What the systemd unit must say for nxrd to run many workloads and say why it does not
(systemd-analyze verifies it in the kernel tier; the package test installs its docs)."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "units/nxrd.service"


def settings() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_limits_fit_hundreds_of_workloads() -> None:
    s = settings()
    assert int(s["LimitNOFILE"]) >= 65536  # six kept-open counter files per workload
    assert s["TasksMax"] == "infinity"  # the unit's cgroup holds every workload's threads


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
