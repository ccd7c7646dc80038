"""Launching a workload: a per-workload shim, the process inside its cgroup before exec.

nxrd forks a shim (no exec: fast) that starts its own session, forks the workload,
waits for it and writes how it ended to a status file. The workload joins its cgroup
between fork and exec, so it and everything it forks run under the limits from its first
instruction. Because the shim, not nxrd, is the workload's parent, exit statuses survive
an nxrd crash or upgrade: the next nxrd reads them from the status file.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import selectors
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nxrd.errors import KernelError
from nxrd.files import private_dir, write_atomically

LOG_MAX_BYTES = 10 << 20
LOG_BACKUPS = 3


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    argv: tuple[str, ...]
    cgroup_dir: Path
    env: dict[str, str]
    status_file: Path
    log_file: Path
    user: str | None = None
    group: str | None = None
    cwd: str | None = None
    log_max_bytes: int = LOG_MAX_BYTES
    log_backups: int = LOG_BACKUPS
    journal: bool = False  # also send each output line to journald
    # Where the shim lives (nxrd's own leaf of the subtree): with its workload, not in
    # nxrd's unit, whose restart after a crash must find nothing of the workloads there.
    shim_cgroup: Path | None = None
    # /proc/self/oom_score_adj before exec (inherited by what it forks); None: left as is
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Launched:
    pid: int  # the workload's main process
    shim_pid: int
    started: float  # wall clock


@dataclass
class ExitStatus:
    code: int | None = None
    signal: int | None = None
    time: float = field(default_factory=time.time)


def join_cgroup(cgroup_dir: str | Path) -> None:
    """Move the calling process into cgroup_dir; called between fork and exec."""
    fd = os.open(os.path.join(cgroup_dir, "cgroup.procs"), os.O_WRONLY)
    try:
        os.write(fd, b"0")  # "0" means the writing process itself
    finally:
        os.close(fd)


Ids = tuple[int | None, int | None, list[int] | None]  # uid, gid, supplementary groups


def ids_of(name: str, user: str | None, group: str | None) -> Ids:
    """uid, gid and supplementary groups to switch to, resolved before forking."""
    uid = gid = None
    groups: list[int] | None = None
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise KernelError(f"cannot start {name}: no user named {user!r}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
        groups = os.getgrouplist(user, pw.pw_gid)
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise KernelError(f"cannot start {name}: no group named {group!r}") from None
    return uid, gid, groups


def become(ids: Ids) -> None:
    """Switch to the workload's groups, then group, then user (last: it drops the right to
    change the others); called between fork and exec, after join_cgroup."""
    uid, gid, groups = ids
    if groups is not None:
        os.setgroups(groups)
    if gid is not None:
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def launch(spec: LaunchSpec) -> Launched:
    """Start the workload through its shim; raises KernelError if it cannot be exec'd."""
    procs = spec.cgroup_dir / "cgroup.procs"
    if not procs.exists():
        raise KernelError(f"cannot start {spec.name}: no cgroup at {spec.cgroup_dir}")
    program = spec.argv[0]
    if "/" not in program:
        # Resolved once here: execve of the full path skips the PATH walk in the child.
        found = shutil.which(program, path=spec.env.get("PATH"))
        if found is None:
            raise KernelError(f"cannot start {spec.name}: program {program!r} not found in PATH")
        program = found
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise KernelError(f"cannot start {spec.name}: cwd {spec.cwd} is not a directory")
    ids = ids_of(spec.name, spec.user, spec.group)
    try:
        private_dir(spec.status_file.parent)
        private_dir(spec.log_file.parent)
        # A previous run's record must not pass for this run's exit.
        spec.status_file.unlink(missing_ok=True)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        shim_pid = os.fork()
    except OSError as e:
        raise KernelError(f"cannot start {spec.name}: {e.strerror or e}") from None
    if shim_pid == 0:  # the shim
        code = 1
        try:
            os.close(report_r)
            code = _shim(spec, program, ids, report_w)
        finally:
            os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as f:
        report = f.read()
    if not report.startswith(b"pid "):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(shim_pid, 0)
        reason = report.decode(errors="replace").strip() or "the shim died"
        raise KernelError(f"cannot start {spec.name}: {reason}")
    return Launched(int(report.split()[1]), shim_pid, time.time())


def _shim(
    spec: LaunchSpec,
    program: str,
    ids: Ids,
    report: int,
) -> int:
    # Own session: a signal to nxrd's process group never reaches the shim or the workload.
    os.setsid()
    if spec.shim_cgroup is not None:
        try:
            join_cgroup(spec.shim_cgroup)
        except OSError as e:
            os.write(report, f"join {spec.shim_cgroup}: {e.strerror or e}".encode())
            return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)  # closes on a successful exec, else carries errno
    # nxrd's own descriptors (its socket, pidfds, logs) must not leak into the workload.
    # closerange between the kept ones: one C loop, not 65536 Python calls (60 ms per spawn).
    low = 3
    for fd in sorted({report, out_r, out_w, err_r, err_w}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())
    pid = os.fork()
    if pid == 0:
        _exec_workload(spec, program, ids, out_w, err_w)  # never returns
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        os.write(report, failure)
        return 1
    # The pid first: nxrd waits on it; the status file is for a later nxrd to adopt from.
    os.write(report, f"pid {pid}\n".encode())
    os.close(report)
    _write_status(
        spec.status_file,
        {
            "name": spec.name,
            "pid": pid,
            "shim_pid": os.getpid(),
            "started": time.time(),
            "exit": None,
        },
    )
    status = _pump(spec, pid, out_r)
    _write_status(
        spec.status_file,
        {"name": spec.name, "pid": pid, "shim_pid": os.getpid(), "exit": status.__dict__},
    )
    return 0


def _exec_workload(
    spec: LaunchSpec,
    program: str,
    ids: Ids,
    out: int,
    err: int,
) -> None:
    step = "join cgroup"
    try:
        join_cgroup(spec.cgroup_dir)  # before anything else of the workload runs
        os.setsid()  # its own process group: stop signals reach its children too
        if spec.oom_score_adj is not None:  # as root, before the switch: lowering needs it
            # a preference, not a limit: an nxrd without the right still starts the workload
            with contextlib.suppress(OSError):
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
                try:
                    os.write(fd, str(spec.oom_score_adj).encode())
                finally:
                    os.close(fd)
        step = "switch user"
        become(ids)
        step = "change directory"
        if spec.cwd is not None:
            os.chdir(spec.cwd)
        step = "exec"
        os.umask(0o022)  # the usual one, not nxrd's private 0077 (the unit's UMask=)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.execve(program, list(spec.argv), spec.env)
    except OSError as e:
        os.write(err, f"{step}: {e.strerror or e}".encode())
    except BaseException as e:  # anything at all: the child must never return into nxrd
        os.write(err, f"{step}: {e}".encode())
    os._exit(127)


DRAIN_AFTER_EXIT = 0.5  # seconds: children that inherited stdout may keep it open for ever


def _pump(spec: LaunchSpec, pid: int, out: int) -> ExitStatus:
    """Copy the workload's output to its log until it exits; return how it exited."""
    log = RotatingLog(spec.log_file, spec.log_max_bytes, spec.log_backups, _journal_sender(spec))
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    sel.register(out, selectors.EVENT_READ, "out")
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    os.set_blocking(out, False)
    status: ExitStatus | None = None
    deadline = 0.0
    out_open = True
    while status is None or (out_open and time.monotonic() < deadline):
        timeout = None if status is None else max(0.0, deadline - time.monotonic())
        for key, _ in sel.select(timeout):
            if key.data == "exit":
                _, raw = os.waitpid(pid, 0)
                status = _decode(raw)
                deadline = time.monotonic() + DRAIN_AFTER_EXIT
                sel.unregister(pidfd)
                os.close(pidfd)
            else:
                data = _read(out)
                if data == b"":  # every writer closed
                    sel.unregister(out)
                    out_open = False
                elif data:
                    log.write(data)
    log.close()
    return status


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def _decode(raw: int) -> ExitStatus:
    if os.WIFSIGNALED(raw):
        return ExitStatus(signal=os.WTERMSIG(raw))
    return ExitStatus(code=os.waitstatus_to_exitcode(raw))


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (ValueError, OSError):
        return 1024


def _write_status(path: Path, data: dict[str, object]) -> None:
    write_atomically(path, json.dumps(data))


def read_status(path: Path) -> dict[str, object] | None:
    """The shim's status file, or None if there is none (never started, or cleaned up)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _journal_sender(spec: LaunchSpec) -> Callable[[str], None] | None:
    if not spec.journal:
        return None
    try:
        from systemd import journal
    except ImportError:
        return None

    def send(line: str) -> None:
        with contextlib.suppress(OSError):
            journal.send(line, SYSLOG_IDENTIFIER=spec.name, NXR_WORKLOAD=spec.name)

    return send


class RotatingLog:
    """Output lines with a timestamp, rotated by size: name.log, name.log.1, ..."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        journal: Callable[[str], None] | None = None,
    ) -> None:
        self.path, self.max_bytes, self.backups, self.journal = path, max_bytes, backups, journal
        self._partial = b""
        self._f = _private_log(path)  # held open for the workload's life
        self._size = self._f.tell()

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > 65536:  # a line without end: write it in pieces
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()).encode()
        record = stamp + b" " + line + b"\n"
        if self._size + len(record) > self.max_bytes and self._size > 0:
            self._rotate()
        self._f.write(record)
        self._f.flush()
        self._size += len(record)
        if self.journal is not None:
            self.journal(line.decode(errors="replace"))

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._f = _private_log(self.path)
        self._size = 0

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        self._f.close()


def _private_log(path: Path) -> BinaryIO:
    """A log file only root reads (0600): workloads print tokens and prompts."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")
