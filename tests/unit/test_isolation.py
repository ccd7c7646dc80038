"""Exclusive cores kept clear of the rest of the machine: systemd's slices, interrupts,
unbound workqueues and irqbalance moved to the other CPUs while nxrd runs, and given
back what they had on exit, after a crash, or when no exclusive core is left."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from nxrd.cli.format import others_line
from nxrd.daemon.core import Daemon
from nxrd.daemon.isolation import Isolation, give_back
from nxrd.errors import KernelError
from nxrd.kernel.fake_host import FakeHost, FakeHostCpus
from nxrd.kernel.housekeeping import HostCpus
from nxrd.model.topology import load_topology
from nxrd.model.units import format_cpu_mask, parse_cpu_mask
from nxrd.plan import make_plan
from nxrd.plan.clear_cores import housekeeping_cpus, irq_cpus, slices_kept_off
from nxrd.profile import parse_profile
from tests.unit.conftest import TOPOLOGIES, start_daemon

LC = '[workloads.chat]\ncommand = ["serve"]\nclass = "latency-critical"\ncpus = 1\n'
BATCH = '[workloads.embed]\ncommand = ["embed"]\nclass = "batch"\n'


def plan(text: str):  # type: ignore[no-untyped-def]
    return make_plan(parse_profile(text), load_topology(TOPOLOGIES / "vm-2cpu.json"))


def test_the_rest_of_the_machine_gets_every_cpu_but_the_exclusive_cores() -> None:
    assert plan(LC + BATCH).workload("chat").cpus == "0"
    assert housekeeping_cpus(plan(LC + BATCH)) == {1}
    assert housekeeping_cpus(plan(BATCH)) == frozenset()  # nothing exclusive: nothing to do
    # an interrupt spread over some CPUs keeps what is left of them, else gets them all
    assert irq_cpus("0-3", frozenset({2, 3, 4})) == "2-3"
    assert irq_cpus("1", frozenset({0, 2})) == "0,2"
    kept, why = slices_kept_off(("system.slice", "user.slice"), "system.slice/nxr", True)
    assert kept == ["user.slice"] and "nxr's tree is inside it" in why["system.slice"]
    assert slices_kept_off(("user.slice",), None, False) == (
        [],
        {"user.slice": "systemd is not the init system"},
    )


def test_cpu_masks_are_written_as_wide_as_the_kernel_reads_them() -> None:
    assert format_cpu_mask({0}, "ffffffff,ffffffff") == "00000000,00000001"
    assert format_cpu_mask({0, 33}, "ffffffff,ffffffff") == "00000002,00000001"
    assert format_cpu_mask({0, 2}, "f") == "5"
    assert parse_cpu_mask("00000002,00000001") == {0, 33}


def test_apply_moves_everything_it_can_and_says_what_it_could_not(tmp_path: Path) -> None:
    cpus, said = FakeHostCpus(), []
    iso = Isolation(cpus, tmp_path, "nxr.slice/nxr-workloads.service", said.append)
    iso.apply(plan(LC + BATCH))
    assert cpus.allowed == {"system.slice": "1", "user.slice": "1", "init.scope": "1"}
    assert cpus.irq == {"1": "1", "9": "1", "24": "0-1"}  # 24 is per-CPU: the kernel keeps it
    assert cpus.masks == {"default_irq": "2", "workqueue": "2"}
    assert said == [
        "exclusive cores 0 kept clear: system.slice, user.slice, init.scope (AllowedCPUs), "
        "2 interrupts, new interrupts, unbound workqueues on 1; "
        "1 interrupts the kernel keeps in place (24)"
    ]
    saved = json.loads((tmp_path / "host.json").read_text())
    assert saved["slices"] == {"system.slice": "", "user.slice": "", "init.scope": ""}
    assert saved["irqs"] == {"1": "0-1", "9": "0", "24": "0-1"}
    iso.apply(plan(LC + BATCH))  # the same plan again: nothing written, nothing said
    assert len(said) == 1
    iso.restore()
    assert cpus.allowed == dict.fromkeys(cpus.allowed, "")
    assert cpus.irq == {"1": "0-1", "9": "0", "24": "0-1"}
    assert cpus.masks == {"default_irq": "3", "workqueue": "3"}
    assert not (tmp_path / "host.json").exists()


def test_after_a_crash_the_originals_are_the_machines_not_nxrs(tmp_path: Path) -> None:
    """The nxrd that died left its values in place; the next reads them as they are now,
    but gives back what host.json kept from before the first."""
    cpus = FakeHostCpus()
    Isolation(cpus, tmp_path, None, lambda s: None).apply(plan(LC))
    again = Isolation(cpus, tmp_path, None, lambda s: None)
    again.apply(plan(LC))
    again.restore()
    assert cpus.irq["1"] == "0-1" and cpus.allowed["user.slice"] == ""
    # `nxrd restore-host` (ExecStopPost=) does the same with no nxrd running
    Isolation(cpus, tmp_path, None, lambda s: None).apply(plan(LC))
    assert give_back(cpus, tmp_path / "host.json") == []
    assert cpus.irq["1"] == "0-1" and cpus.masks["workqueue"] == "3"
    assert give_back(cpus, tmp_path / "host.json") == []  # nothing saved: nothing to do


def test_a_plan_without_exclusive_cores_gives_the_machine_back(tmp_path: Path) -> None:
    cpus, said = FakeHostCpus(), []
    iso = Isolation(cpus, tmp_path, None, said.append)
    iso.apply(plan(BATCH))
    assert cpus.allowed["system.slice"] == "" and said == []  # nothing exclusive
    iso.apply(plan(LC + BATCH))
    assert cpus.allowed["system.slice"] == "1"
    iso.apply(plan(BATCH))  # a reload that took chat away
    assert cpus.allowed["system.slice"] == "" and cpus.irq["1"] == "0-1"


def test_irqbalance_is_told_to_leave_the_exclusive_cores_and_then_not(tmp_path: Path) -> None:
    cpus = FakeHostCpus()
    cpus.balancer = tmp_path / "irqbalance123.sock"
    cpus.balancer.touch()
    iso = Isolation(cpus, tmp_path, None, lambda s: None)
    iso.apply(plan(LC))
    iso.restore()
    assert cpus.banned == ["0", None]


def test_a_slice_systemd_refuses_is_a_warning_and_the_rest_still_moves(tmp_path: Path) -> None:
    class Refusing(FakeHostCpus):
        def set_allowed_cpus(self, unit: str, cpus: str) -> None:
            if unit == "init.scope":
                raise KernelError("systemctl set-property --runtime init.scope: Access denied")
            super().set_allowed_cpus(unit, cpus)

    cpus, said = Refusing(), []
    Isolation(cpus, tmp_path, None, said.append).apply(plan(LC))
    assert cpus.allowed["system.slice"] == "1" and cpus.irq["1"] == "1"
    assert said[-1] == (
        "warning: isolation: systemctl set-property --runtime init.scope: Access denied"
    )


def started(tmp_path: Path, profile: str) -> tuple[FakeHost, Daemon]:
    """nxrd started on a fake 2-CPU host with this profile."""
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    d = start_daemon(tmp_path, host, profile)
    return host, d


def test_nxrd_keeps_the_machine_off_its_exclusive_cores_until_it_exits(tmp_path: Path) -> None:
    host, d = started(tmp_path, LC)
    assert host.fake_cpus.allowed["user.slice"] == "1"
    d.close()
    assert host.fake_cpus.allowed["user.slice"] == "" and host.fake_cpus.irq["1"] == "0-1"


# -- the kernel layer, on a directory tree standing in for /proc, /sys and /run


def tree(tmp_path: Path) -> HostCpus:
    for irq, cpus in (("1", "0-3"), ("9", "0")):
        (tmp_path / f"proc/irq/{irq}").mkdir(parents=True)
        (tmp_path / f"proc/irq/{irq}/smp_affinity_list").write_text(cpus + "\n")
    (tmp_path / "proc/irq/default_smp_affinity").write_text("f\n")
    (tmp_path / "sys/devices/virtual/workqueue").mkdir(parents=True)
    (tmp_path / "sys/devices/virtual/workqueue/cpumask").write_text("f\n")
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    calls: list[list[str]] = []

    def systemctl(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        if "show" in argv:
            return subprocess.CompletedProcess(argv, 0, "0-3\n", "")
        if argv[-1] == "AllowedCPUs=bad":
            return subprocess.CompletedProcess(argv, 1, "", "Failed to set: Invalid argument\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    host = HostCpus(tmp_path / "proc", tmp_path / "sys", tmp_path / "run", systemctl)
    host.calls = calls  # type: ignore[attr-defined]
    return host


def test_the_kernel_layer_reads_and_writes_where_the_kernel_keeps_them(tmp_path: Path) -> None:
    host = tree(tmp_path)
    assert host.systemd() and host.irqs() == {"1": "0-3", "9": "0"}
    host.set_irq("1", "0-1")
    assert (tmp_path / "proc/irq/1/smp_affinity_list").read_text() == "0-1"
    with pytest.raises(KernelError, match="irq/7/smp_affinity_list"):
        host.set_irq("7", "0")  # gone since it was listed
    assert host.workqueue_mask() == "f" and host.default_irq_mask() == "f"
    host.set_workqueue_mask("3")
    assert (tmp_path / "sys/devices/virtual/workqueue/cpumask").read_text() == "3"
    assert host.allowed_cpus("user.slice") == "0-3"
    host.set_allowed_cpus("user.slice", "0-1")
    assert host.calls[-1] == [  # type: ignore[attr-defined]
        "systemctl",
        "set-property",
        "--runtime",
        "user.slice",
        "AllowedCPUs=0-1",
    ]
    with pytest.raises(KernelError, match="Failed to set: Invalid argument"):
        host.set_allowed_cpus("user.slice", "bad")
    # lifted: every online CPU first, or systemd would leave the narrowed cpuset in force
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/online").write_text("0-3\n")
    host.set_allowed_cpus("user.slice", "")
    assert [c[-1] for c in host.calls[-2:]] == ["AllowedCPUs=0-3", "AllowedCPUs="]  # type: ignore[attr-defined]


def test_irqbalance_is_reached_through_its_own_socket(tmp_path: Path) -> None:
    host = tree(tmp_path)
    assert host.irqbalance() is None
    (tmp_path / "run/irqbalance").mkdir()
    (tmp_path / "proc/4242").mkdir()
    path = tmp_path / "run/irqbalance/irqbalance4242.sock"
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()

        def serve() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                with conn:
                    got.append(conn.recv(1024))

        t = threading.Thread(target=serve)
        t.start()
        assert host.irqbalance() == path
        host.ban_from_irqbalance(path, "2-3")
        host.ban_from_irqbalance(path, None)
        t.join(5)
    assert got == [b"settings cpus 2-3", b"settings cpus NULL"]


def process(proc: Path, pid: int, name: str, cpus: str, cgroup: str, flags: int = 0) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "status").write_text(f"Name:\t{name}\nPPid:\t1\nCpus_allowed_list:\t{cpus}\n")
    (d / "cgroup").write_text(f"0::{cgroup}\n")
    (d / "stat").write_text(f"{pid} ({name}) S 1 1 1 0 -1 {flags} 0 0\n")


def test_explain_names_what_else_may_run_on_an_exclusive_workloads_cores(tmp_path: Path) -> None:
    host = tree(tmp_path)  # interrupt 1 on 0-3, 9 on 0
    proc = tmp_path / "proc"
    process(proc, 10, "chat", "2", "/nxr.slice/nxr-workloads.service/latency-critical/chat")
    process(proc, 11, "sshd", "0-3", "/system.slice/ssh.service")
    process(proc, 12, "cron", "0-1", "/system.slice/cron.service")  # not on core 2
    process(proc, 13, "ksoftirqd/2", "2", "/", flags=0x00208040)  # PF_KTHREAD
    own = "/nxr.slice/nxr-workloads.service/latency-critical/chat"
    got = host.others_on(frozenset({2}), own)
    assert got == {
        "processes": 1,
        "named": [{"pid": 11, "command": "sshd", "cgroup": "/system.slice/ssh.service"}],
        "kernel_threads": 1,
        "interrupts": ["1"],
    }
    assert others_line(got) == (
        "on its cores besides it: 1 processes: sshd 11 (/system.slice/ssh.service); "
        "interrupts 1; 1 kernel threads (per-CPU ones cannot move)"
    )
    nothing = {"processes": 0, "named": [], "kernel_threads": 0, "interrupts": []}
    assert others_line(nothing) == "on its cores besides it: nothing"


def test_explain_of_an_exclusive_workload_asks_what_else_is_on_its_cores(tmp_path: Path) -> None:
    host, d = started(tmp_path, LC + BATCH)
    host.fake_cpus.others["interrupts"] = ["24"]
    assert d.view.explain(d.sup.records["chat"])["others_on_cores"]["interrupts"] == ["24"]
    assert "others_on_cores" not in d.view.explain(d.sup.records["embed"])  # shared CPUs
    d.close()


def test_a_cgroup_root_named_by_a_unit_that_is_not_running_is_a_one_line_error() -> None:
    """`--cgroup-root unit:NAME` (the shipped unit's): systemd is asked where NAME runs;
    the systemd tier proves the answer, here there is none to give."""
    from nxrd.kernel.subtree import unit_cgroup

    with pytest.raises(KernelError, match=r"^--cgroup-root unit:nxr-none\.service: "):
        unit_cgroup("nxr-none.service")


def test_nxrds_own_service_is_kept_off_too_unless_the_tree_is_inside_it(tmp_path: Path) -> None:
    """nxrd's own process would otherwise run on an exclusive core (found by the systemd
    tier's nxrctl explain check); its shims take their leaf's cpuset when they move."""
    fake = FakeHostCpus()
    fake.own = "nxrd.service"
    fake.allowed["nxrd.service"] = ""
    iso = Isolation(fake, tmp_path, "nxr.slice/nxr-workloads.service", lambda _m: None)
    iso.apply(plan(LC))
    assert fake.allowed["nxrd.service"] == fake.allowed["system.slice"] != ""
    give_back(fake, tmp_path / "host.json")
    assert fake.allowed["nxrd.service"] == ""
    # an nxrd whose tree is its own service's cgroup: narrowing it would narrow the workloads
    other = FakeHostCpus()
    other.own = "nxrd.service"
    (tmp_path / "b").mkdir()
    Isolation(other, tmp_path / "b", "system.slice/nxrd.service", lambda _m: None).apply(plan(LC))
    assert "nxrd.service" not in other.allowed


def test_own_unit_is_read_from_nxrds_cgroup(tmp_path: Path) -> None:
    hk = tree(tmp_path)
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/nxr.slice/nxrd.service\n")
    assert hk.own_unit() == "nxrd.service"
    (tmp_path / "proc/self/cgroup").write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert hk.own_unit() is None
