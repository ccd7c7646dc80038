"""The package's shape, as docs/architecture.md describes it: kernel I/O only in the kernel
layer, a daemon of small modules, the demo outside the installed package."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nxrd"

# What only nxrd/kernel may do: open /sys, /proc or /dev, take pidfds, look users up,
# talk to systemd.
KERNEL_ONLY = re.compile(
    r"/sys/|/proc/|\"/dev/|pidfd_open|^\s*import (pwd|grp|systemd)\b|^\s*from systemd\b",
    re.MULTILINE,
)


def modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def test_kernel_io_stays_in_the_kernel_layer() -> None:
    found = [
        f"{p.relative_to(PACKAGE.parent)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for p in modules(PACKAGE)
        if PACKAGE / "kernel" not in p.parents
        for text in [p.read_text()]
        for m in KERNEL_ONLY.finditer(text)
    ]
    assert found == []


def test_the_pattern_finds_what_it_is_meant_to() -> None:
    for line in (
        'open(f"/proc/{pid}/cgroup")',
        "os.pidfd_open(pid)",
        "import pwd",
        '"/dev/nvidia0"',
    ):
        assert KERNEL_ONLY.search(line), line


def test_no_module_of_the_daemon_does_several_jobs() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in modules(PACKAGE / "daemon")}
    assert {name: n for name, n in sizes.items() if n > 300} == {}


def test_the_demo_is_not_in_the_installed_package() -> None:
    assert not (PACKAGE / "demo").exists()


def test_names_explain_themselves() -> None:
    """No two modules of the package share a file name, and no two classes a name: a reader
    who meets `State` or `runtime.py` knows which one it is."""
    files = [p.name for p in modules(PACKAGE) if p.name != "__init__.py"]
    classes = [
        m.group(1)
        for p in modules(PACKAGE)
        for m in re.finditer(r"^class (\w+)", p.read_text(), re.MULTILINE)
    ]
    assert sorted({f for f in files if files.count(f) > 1}) == []
    assert sorted({c for c in classes if classes.count(c) > 1}) == []
