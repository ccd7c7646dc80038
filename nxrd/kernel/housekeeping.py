"""Where the rest of the machine runs: systemd's slices, device interrupts, the kernel's
unbound workqueues and irqbalance, read and moved through the interfaces each offers.

systemd's slices through its D-Bus API, called by `systemctl set-property --runtime` (the
same SetUnitProperties call, with no D-Bus library to bundle), never by writing their
cgroup files, which systemd owns and would rewrite. Interrupts through
/proc/irq/N/smp_affinity_list, new ones through /proc/irq/default_smp_affinity; unbound
workqueues through /sys/devices/virtual/workqueue/cpumask; irqbalance through the socket
its own UI uses (`settings cpus LIST` bans CPUs from its balancing, `NULL` lifts the ban).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nxrd.errors import KernelError
from nxrd.model.units import parse_cpu_list

# The units that hold everything systemd starts besides nxr: services, user sessions, and
# PID 1 itself.
SLICES = ("system.slice", "user.slice", "init.scope")

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


class HostCpus:
    """The machine outside nxr's subtree, as far as which CPUs it runs on."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        sys: Path = Path("/sys"),
        run: Path = Path("/run"),
        systemctl: Run = _run,
    ) -> None:
        self.proc, self.sys, self.run, self.systemctl = proc, sys, run, systemctl

    # -- systemd

    def systemd(self) -> bool:
        """Whether systemd is the init system (sd_booted's test)."""
        return (self.run / "systemd/system").is_dir()

    def own_unit(self) -> str | None:
        """The service nxrd itself runs in ("nxrd.service"), None outside one."""
        cgroup = _read(self.proc / "self/cgroup") or ""
        name = cgroup.rpartition("::")[2].rsplit("/", 1)[-1]  # "0::/nxr.slice/nxrd.service"
        return name if name.endswith(".service") else None

    def allowed_cpus(self, unit: str) -> str:
        """The unit's AllowedCPUs= ("" when unset: every CPU)."""
        r = self._systemctl("show", "--property=AllowedCPUs", "--value", unit)
        return r.stdout.strip()

    def set_allowed_cpus(self, unit: str, cpus: str) -> None:
        """AllowedCPUs= for as long as this boot.

        "" lifts it, but systemd (252) then stops writing the slice's cpuset.cpus at all,
        and the narrowed value would stay in force: every online CPU is written first."""
        if not cpus:
            every = _read(self.sys / "devices/system/cpu/online")
            if every:
                self._systemctl("set-property", "--runtime", unit, f"AllowedCPUs={every}")
        self._systemctl("set-property", "--runtime", unit, f"AllowedCPUs={cpus}")

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            r = self.systemctl(["systemctl", *args])
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelError(f"systemctl {' '.join(args)}: {e}") from None
        if r.returncode != 0:
            why = (r.stderr or r.stdout).strip().splitlines()
            raise KernelError(
                f"systemctl {' '.join(args)}: {why[-1] if why else f'exit {r.returncode}'}"
            )
        return r

    # -- interrupts

    def irqs(self) -> dict[str, str]:
        """Each interrupt's CPU list (smp_affinity_list), by number."""
        out = {}
        for d in sorted((self.proc / "irq").glob("[0-9]*")):
            with contextlib.suppress(OSError):
                out[d.name] = (d / "smp_affinity_list").read_text().strip()
        return out

    def set_irq(self, irq: str, cpus: str) -> None:
        """KernelError when the kernel keeps it where it is (a per-CPU or managed interrupt
        answers EIO; one that went away, ENOENT)."""
        write_value(self.proc / "irq" / irq / "smp_affinity_list", cpus)

    def default_irq_mask(self) -> str | None:
        """The CPUs (hex mask) a new interrupt gets; None when the file is missing."""
        return _read(self.proc / "irq/default_smp_affinity")

    def set_default_irq_mask(self, mask: str) -> None:
        write_value(self.proc / "irq/default_smp_affinity", mask)

    # -- unbound workqueues

    def workqueue_mask(self) -> str | None:
        """The CPUs (hex mask) unbound kernel work runs on; None when the kernel has none."""
        return _read(self.sys / "devices/virtual/workqueue/cpumask")

    def set_workqueue_mask(self, mask: str) -> None:
        write_value(self.sys / "devices/virtual/workqueue/cpumask", mask)

    # -- what else runs there

    def others_on(self, cores: frozenset[int], own: str) -> dict[str, Any]:
        """What may run on these cores besides the processes of cgroup `own` (a path as
        /proc/PID/cgroup shows it): processes allowed there (at most 10 named, by PID,
        command and cgroup), the per-CPU kernel threads that cannot move, interrupts."""
        named: list[dict[str, Any]] = []
        count = kthreads = 0
        for d in self.proc.glob("[0-9]*"):
            try:
                status = dict(
                    line.split(":\t", 1)
                    for line in (d / "status").read_text().splitlines()
                    if ":\t" in line
                )
                group = (d / "cgroup").read_text().strip().rpartition("::")[2]
            except (OSError, ValueError):
                continue
            try:
                allowed = parse_cpu_list(status.get("Cpus_allowed_list", "").strip())
            except ValueError:
                continue
            if not allowed & cores or group == own or group.startswith(own + "/"):
                continue
            if _kernel_thread(d):
                kthreads += 1  # per-CPU ones stay; unbound ones follow the workqueue mask
                continue
            count += 1
            if len(named) < 10:
                named.append(
                    {
                        "pid": int(d.name),
                        "command": status.get("Name", "?").strip(),
                        "cgroup": group,
                    }
                )
        irqs = [irq for irq, cpus in self.irqs().items() if _on(cpus, cores)]
        return {"processes": count, "named": named, "kernel_threads": kthreads, "interrupts": irqs}

    # -- irqbalance

    def irqbalance(self) -> Path | None:
        """The socket of a running irqbalance, if one runs."""
        for sock in sorted((self.run / "irqbalance").glob("irqbalance*.sock")):
            pid = sock.name.removeprefix("irqbalance").removesuffix(".sock")
            if pid.isdigit() and (self.proc / pid).exists():
                return sock
        return None

    def ban_from_irqbalance(self, sock: Path, cpus: str | None) -> None:
        """Keep irqbalance from putting interrupts on cpus (None: lift the ban)."""
        message = f"settings cpus {cpus or 'NULL'}".encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(sock))
                s.sendall(message)
        except OSError as e:
            raise KernelError(f"irqbalance at {sock}: {e.strerror or e}") from None


PF_KTHREAD = 0x00200000  # include/linux/sched.h


def _kernel_thread(d: Path) -> bool:
    """Whether /proc/PID is a kernel thread: PF_KTHREAD in its flags (stat field 9)."""
    try:
        flags = int((d / "stat").read_text().rsplit(")", 1)[1].split()[6])
    except (OSError, ValueError, IndexError):
        return False
    return bool(flags & PF_KTHREAD)


def _on(cpus: str, cores: frozenset[int]) -> bool:
    try:
        return bool(parse_cpu_list(cpus) & cores)
    except ValueError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_value(path: Path, value: str) -> None:
    """One value, in one write(2), to a kernel file (proc, sysfs, a cgroup's root file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        why = "the kernel keeps it there" if e.errno == errno.EIO else e.strerror
        raise KernelError(f"{path}: {why}") from None


def isolation_report(cpus: HostCpus, cgroup_mount: Path = Path("/sys/fs/cgroup")) -> list[str]:
    """For `nxrd check`: what keeping the rest of the machine off exclusive cores can use
    here, one line each (none of it stops nxrd from starting)."""

    def line(ok: bool, what: str) -> str:
        return f"{'ok' if ok else 'absent':8} {what}"

    irqs = cpus.irqs()
    out = [
        line(
            cpus.systemd(),
            "isolation: systemd's slices kept off exclusive cores (AllowedCPUs=, at run time)"
            if cpus.systemd()
            else "isolation: systemd is not the init system: its slices are not kept off",
        ),
        line(bool(irqs), f"isolation: {len(irqs)} interrupts, moved where the kernel lets them"),
        line(
            cpus.workqueue_mask() is not None,
            "isolation: unbound workqueues kept off (workqueue cpumask)",
        ),
    ]
    if cpus.irqbalance() is not None:
        out.append(line(True, "isolation: irqbalance runs: told to leave exclusive cores"))
    # A partition (cpuset.cpus.partition) needs every ancestor to be one on this kernel
    # line, and systemd (252) makes none of its slices one: say so, do not fight it.
    partition = (cgroup_mount / "nxr.slice/cpuset.cpus.partition").exists()
    out.append(
        line(
            False,
            "isolation: cpuset partitions not made: nxr.slice would have to be a partition "
            "root, and systemd has no property for it"
            if partition
            else "isolation: cpuset partitions not made: no nxr.slice with cpuset here",
        )
    )
    return out
