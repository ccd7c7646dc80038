"""The one narrow interface to cgroup v2 files, a Linux implementation and an in-memory fake.

Paths are relative to nxrd's subtree root ("" is the root itself); nothing
outside that subtree is ever named, so nothing outside it can be written.
"""

from __future__ import annotations

import errno
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from nxrd.errors import KernelError


def _check_rel(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise KernelError(f"cgroup path {rel!r} leaves nxrd's subtree")
    return "" if str(p) == "." else str(p)


def controller_of(filename: str) -> str | None:
    """'cpuset.cpus' -> 'cpuset'; core files ('cgroup.*') need no controller."""
    prefix = filename.split(".", 1)[0]
    return None if prefix == "cgroup" else prefix


def parse_keyed(text: str) -> dict[str, str]:
    """A flat-keyed file's contents ("key value" per line) as a dict."""
    return dict(line.split(maxsplit=1) for line in text.splitlines() if " " in line)


class CgroupFS(ABC):
    """cgroupfs operations nxrd needs, relative to its subtree root."""

    # Told of every successful write (rel, file, value): the ledger of who wrote what.
    on_write: Callable[[str, str, str], None] | None = None

    @abstractmethod
    def describe(self, rel: str = "") -> str:
        """Where rel is, for messages."""

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def mkdir(self, rel: str) -> None: ...

    @abstractmethod
    def rmdir(self, rel: str) -> None: ...

    @abstractmethod
    def read(self, rel: str, filename: str) -> str: ...

    @abstractmethod
    def write(self, rel: str, filename: str, value: str) -> None: ...

    def read_keyed(self, rel: str, filename: str) -> dict[str, str]:
        """A flat-keyed file ("key value" per line: cgroup.events, cpu.stat, memory.events)."""
        return parse_keyed(self.read(rel, filename))

    def rmdir_when_empty(self, rel: str, wait: float = 1.0) -> None:
        """Remove rel, retrying while killed tasks are still leaving it (that is asynchronous)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.rmdir(rel)
                return
            except KernelError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def controllers(self, rel: str = "") -> list[str]:
        """Controllers available in rel (cgroup.controllers)."""
        return self.read(rel, "cgroup.controllers").split()

    def subtree_control(self, rel: str = "") -> list[str]:
        return self.read(rel, "cgroup.subtree_control").split()

    def require(self, controllers: list[str]) -> None:
        """Raise KernelError naming every controller the subtree root cannot use."""
        available = self.controllers("")
        missing = [c for c in controllers if c not in available]
        if missing:
            raise KernelError(
                f"cgroup v2 controllers {', '.join(missing)} are not available in "
                f"{self.describe('')}; enable them in its parent's cgroup.subtree_control "
                "(under systemd: Delegate=yes); `nxrd check` shows the fix"
            )

    def enable(self, rel: str, controllers: list[str]) -> None:
        """Enable controllers for rel's children (cgroup.subtree_control)."""
        missing = [c for c in controllers if c not in self.subtree_control(rel)]
        if missing:
            self.write(rel, "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def procs(self, rel: str) -> list[int]:
        text = self.read(rel, "cgroup.procs")
        return [int(x) for x in text.split()]

    def move(self, rel: str, pid: int) -> None:
        """Move a process (all its threads) into rel."""
        self.write(rel, "cgroup.procs", str(pid))

    @abstractmethod
    def restrict_gpus(self, rel: str, gpu_minors: list[int]) -> None:
        """Let rel's processes open only these /dev/nvidiaN (by minor) of all NVIDIA nodes."""


class LinuxCgroupFS(CgroupFS):
    """The real cgroup2 filesystem, rooted at nxrd's subtree (e.g. /sys/fs/cgroup/nxr)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # Told of every value written (rel, file, value): nxrd's ledger for `explain`.
        self.on_write: Callable[[str, str, str], None] | None = None

    def _path(self, rel: str) -> Path:
        rel = _check_rel(rel)
        return self.root / rel if rel else self.root

    def describe(self, rel: str = "") -> str:
        return str(self._path(rel))

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_dir()

    def mkdir(self, rel: str) -> None:
        try:
            self._path(rel).mkdir()
            # A workload reads its own limits (cpu.max, memory.max: runtimes size their
            # threads and heaps from them), whatever its user and nxrd's umask.
            os.chmod(self._path(rel), 0o755)
        except OSError as e:
            raise KernelError(f"cannot create cgroup {self._path(rel)}: {_reason(e)}") from None

    def rmdir(self, rel: str) -> None:
        try:
            self._path(rel).rmdir()
        except OSError as e:
            raise KernelError(f"cannot remove cgroup {self._path(rel)}: {_reason(e)}") from None

    def read(self, rel: str, filename: str) -> str:
        path = self._path(rel) / filename
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise KernelError(f"cannot read {path}: {_reason(e)}") from None

    def write(self, rel: str, filename: str, value: str) -> None:
        path = self._path(rel) / filename
        try:
            # One write(2) per value: cgroup files parse each write separately.
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            hint = ""
            if e.errno == errno.ENOENT and controller_of(filename):
                hint = f" (is the {controller_of(filename)} controller enabled for it?)"
            raise KernelError(
                f"cannot write {filename} = {value!r} in {self._path(rel)}: {_reason(e)}{hint}"
            ) from None
        if self.on_write is not None:
            self.on_write(rel, filename, value)

    def restrict_gpus(self, rel: str, gpu_minors: list[int]) -> None:
        from nxrd.kernel.devices import restrict_gpus  # ctypes only where a filter is needed

        restrict_gpus(self._path(rel), gpu_minors)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


# Put (rel, DEVICE_FILTER) in FakeCgroupFS.fail_on to make restrict_gpus(rel) fail.
DEVICE_FILTER = "<device filter>"

# Files every cgroup has, and the ones each controller adds (with their defaults).
_CORE_FILES = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.events": "populated 0\nfrozen 0",
    "cgroup.freeze": "0",
}
_CONTROLLER_FILES = {
    "cpuset": {
        "cpuset.cpus": "",
        "cpuset.mems": "",
        "cpuset.cpus.effective": "",
        "cpuset.mems.effective": "",
    },
    "cpu": {
        "cpu.weight": "100",
        "cpu.max": "max 100000",
        "cpu.idle": "0",
        "cpu.stat": "usage_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0",
    },
    "memory": {
        "memory.min": "0",
        "memory.low": "0",
        "memory.high": "max",
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.zswap.max": "max",
        "memory.oom.group": "0",
        "memory.current": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "io": {"io.weight": "default 100"},
}


def _parent(rel: str) -> str:
    return str(PurePosixPath(rel).parent) if "/" in rel else ""


class FakeCgroupFS(CgroupFS):
    """In-memory cgroupfs for unit tests: files appear as controllers are enabled."""

    def __init__(self, controllers: tuple[str, ...] = ("cpuset", "cpu", "io", "memory", "pids")):
        self.dirs: dict[str, dict[str, str]] = {"": self._files(list(controllers))}
        self.dirs[""]["cgroup.controllers"] = " ".join(controllers)
        self.writes: list[tuple[str, str, str]] = []
        self.fail_on: set[tuple[str, str]] = set()  # (rel, file) pairs whose write fails
        self.gpu_filters: dict[str, list[int]] = {}  # rel -> GPU minors its filter allows
        self.on_write: Callable[[str, str, str], None] | None = None  # as LinuxCgroupFS

    @staticmethod
    def _files(controllers: list[str]) -> dict[str, str]:
        files = dict(_CORE_FILES)
        for c in controllers:
            files.update(_CONTROLLER_FILES.get(c, {}))
        return files

    def _dir(self, rel: str) -> dict[str, str]:
        rel = _check_rel(rel)
        if rel not in self.dirs:
            raise KernelError(f"cannot use cgroup fake:/{rel}: No such file or directory")
        return self.dirs[rel]

    def describe(self, rel: str = "") -> str:
        return f"fake:/{_check_rel(rel)}"

    def exists(self, rel: str) -> bool:
        return _check_rel(rel) in self.dirs

    def mkdir(self, rel: str) -> None:
        rel = _check_rel(rel)
        parent = _parent(rel)
        if rel in self.dirs:
            raise KernelError(f"cannot create cgroup fake:/{rel}: File exists")
        enabled = self._dir(parent)["cgroup.subtree_control"].split()
        self.dirs[rel] = self._files(enabled)
        self.dirs[rel]["cgroup.controllers"] = " ".join(enabled)

    def rmdir(self, rel: str) -> None:
        rel = _check_rel(rel)
        if any(d.startswith(rel + "/") for d in self.dirs) or self._dir(rel)["cgroup.procs"]:
            raise KernelError(f"cannot remove cgroup fake:/{rel}: Device or resource busy")
        del self.dirs[rel]

    def read(self, rel: str, filename: str) -> str:
        files = self._dir(rel)
        if filename not in files:
            raise KernelError(f"cannot read fake:/{rel}/{filename}: No such file or directory")
        return files[filename]

    def write(self, rel: str, filename: str, value: str) -> None:
        files = self._dir(rel)
        if filename not in files or (rel, filename) in self.fail_on:
            raise KernelError(
                f"cannot write {filename} = {value!r} in fake:/{rel}: "
                + ("Invalid argument" if filename in files else "No such file or directory")
            )
        if filename == "cgroup.subtree_control":
            have = set(files[filename].split())
            available = files["cgroup.controllers"].split()
            for token in value.split():
                name = token[1:]
                if name not in available:
                    raise KernelError(
                        f"cannot enable {name} in fake:/{rel}: No such file or directory"
                    )
                users = [
                    d
                    for d in self.dirs
                    if d and _parent(d) == rel and name in self.dirs[d][filename].split()
                ]
                if token[0] == "-" and users:  # the kernel's rule, as in disabling it
                    raise KernelError(
                        f"cannot disable {name} in fake:/{rel}: Device or resource busy "
                        f"(fake:/{users[0]} enables it for its children)"
                    )
                (have.add if token[0] == "+" else have.discard)(name)
            self._took(rel, filename, value)
            files[filename] = " ".join(c for c in available if c in have)
            # as in the kernel, children that exist already gain (or lose) their files
            for child in [d for d in self.dirs if d and _parent(d) == rel]:
                its = self.dirs[child]
                for c in available:
                    for name, default in _CONTROLLER_FILES.get(c, {}).items():
                        if c not in have:
                            its.pop(name, None)
                        else:
                            its.setdefault(name, default)
                its["cgroup.controllers"] = files[filename]
        elif filename == "cgroup.procs":
            self._took(rel, filename, value)
            files[filename] = "\n".join([*files[filename].split(), value])
        else:
            self._took(rel, filename, value)
            files[filename] = value

    def _took(self, rel: str, filename: str, value: str) -> None:
        """A write the kernel would take: recorded, and told to on_write (the ledger)."""
        self.writes.append((rel, filename, value))
        if self.on_write is not None:
            self.on_write(rel, filename, value)

    def restrict_gpus(self, rel: str, gpu_minors: list[int]) -> None:
        self._dir(rel)
        if (rel, DEVICE_FILTER) in self.fail_on:
            raise KernelError(
                f"cgroup device filter for fake:/{rel}: bpf() not permitted (needs CAP_SYS_ADMIN)"
            )
        self.gpu_filters[rel] = sorted(gpu_minors)
