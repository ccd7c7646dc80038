"""Parsing of the profile's value syntaxes: sizes, durations, CPU lists, CPU quotas."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
# Binary multiples, as systemd and the cgroup files use them: "4G" is 4 GiB.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
}

_DUR_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)")
_DUR_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "4G", "512MiB", "1.5G"."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "4G" or "512MiB", not a boolean')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative (got {value})")
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ValueError(f'expected a size such as "4G" or "512MiB" (got {value!r})')
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f'not a size: {value!r} (examples: "4G", "512MiB", "1073741824")')
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _SIZE_UNITS:
        hint = ""
        if unit in ("kb", "mb", "gb", "tb", "ki", "mi", "gi", "ti"):
            hint = f'; write "{number}{unit[0].upper()}" or "{number}{unit[0].upper()}iB"'
        raise ValueError(
            f"unknown size unit {m.group(2)!r} in {value!r} (units are binary: K, M, G, T or "
            f"KiB, MiB, GiB, TiB{hint})"
        )
    return _bounded(float(number) * _SIZE_UNITS[unit], value)


MAX_SIZE = 1 << 60


def _bounded(n: float, value: object) -> int:
    # Far above any host, and below where the kernel clamps limits to "max".
    if not n < MAX_SIZE:
        raise ValueError(f'size {value!r} is too large (at most 1024T; use "max" for no limit)')
    return int(n)


def format_size(n: int) -> str:
    """Short binary form: 4294967296 -> "4G", 2016 GiB -> "2016G", 1610612736 -> "1.5G"."""
    units = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))
    for i, (suffix, mult) in enumerate(units):
        if n < mult:
            continue
        if n % mult == 0:
            return f"{n // mult}{suffix}"
        if i + 1 < len(units) and n % units[i + 1][1] == 0 and n // units[i + 1][1] < 100000:
            return f"{n // units[i + 1][1]}{units[i + 1][0]}"
        return f"{n / mult:.1f}{suffix}"
    return str(n)


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string like "500ms", "10s", "1m30s"."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "10s", not a boolean')
    if isinstance(value, int | float):
        if not 0 <= value < 1e9:  # also rejects NaN and infinity
            raise ValueError(f"duration must be a finite number of seconds >= 0 (got {value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f'expected a duration such as "500ms" or "10s" (got {value!r})')
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DUR_PART_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f'not a duration: {value!r} (examples: "500ms", "10s", "5m", "1h")')
    if not total < 1e9:
        raise ValueError(f"duration {value!r} is too long")
    return total


def format_duration(seconds: float) -> str:
    """Readable form: 0.5 -> "500ms", 90 -> "1m30s"."""
    if seconds < 1 and seconds != 0:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}us"
    if seconds < 60 or seconds % 1:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    rest = f"{minutes}m" if minutes else ""
    return f"{hours}h{rest}" + (f"{secs}s" if secs else "")


def parse_cpu_list(value: object) -> frozenset[int]:
    """CPU ids from the kernel's list syntax "0-3,6" (also accepts a list of ints)."""
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ValueError("a CPU list must hold non-negative integers")
        if not value:
            raise ValueError("CPU list is empty")
        return frozenset(value)
    if not isinstance(value, str):
        raise ValueError(f'expected a CPU list such as "2-3,6" (got {value!r})')
    cpus: set[int] = set()
    text = value.strip()
    if not text:
        raise ValueError("CPU list is empty")
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f'not a CPU list: {value!r} (example: "2-3,6")')
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(f"backwards CPU range {part!r} in {value!r}")
        if b - a > 65535:
            raise ValueError(f"CPU range {part!r} is too large")
        cpus.update(range(a, b + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int] | list[int]) -> str:
    """The kernel's canonical list form, as cpuset.cpus reads back: [0,1,2,5] -> "0-2,5"."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def parse_cpu_mask(text: str) -> frozenset[int]:
    """CPU ids from the kernel's hex mask form ("ff,00000001", 32 bits a group), as the
    default interrupt affinity and the workqueue cpumask read."""
    bits = int(text.strip().replace(",", "") or "0", 16)
    return frozenset(i for i in range(bits.bit_length()) if bits >> i & 1)


def format_cpu_mask(cpus: frozenset[int] | set[int], like: str) -> str:
    """cpus in the hex mask form of `like` (a mask read from the same file): as many
    comma-separated 32-bit groups, each as wide as there."""
    groups = like.strip().split(",")
    width = len(groups[-1])
    bits = sum(1 << c for c in cpus)
    out = []
    for _ in groups:
        out.append(f"{bits & 0xFFFFFFFF:0{width}x}")
        bits >>= 32
    return ",".join(reversed(out))


def parse_cpu_quota(value: object) -> float:
    """CPUs from "150%" (1.5 CPUs) or a number of CPUs (1.5)."""
    if isinstance(value, bool):
        raise ValueError('expected a CPU quota such as "150%", not a boolean')
    if isinstance(value, int | float):
        cpus = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            cpus = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f'not a CPU quota: {value!r} (example: "150%" = 1.5 CPUs)') from None
    else:
        raise ValueError(f'not a CPU quota: {value!r} (example: "150%" = 1.5 CPUs)')
    if not 0.01 <= cpus <= 65536:  # also rejects NaN
        raise ValueError(f"CPU quota must be between 1% and 6553600% (got {value!r})")
    return cpus


# Rates spelled as tc spells them (tc-util.c get_rate, compared without case): "bit" units
# are bits per second, "Bps" units *bytes* per second; decimal and binary multiples.
_RATE_UNITS = {
    "bit": 1,
    "kbit": 1000,
    "mbit": 1000**2,
    "gbit": 1000**3,
    "tbit": 1000**4,
    "kibit": 1 << 10,
    "mibit": 1 << 20,
    "gibit": 1 << 30,
    "tibit": 1 << 40,
    "bps": 8,
    "kbps": 8 * 1000,
    "mbps": 8 * 1000**2,
    "gbps": 8 * 1000**3,
    "tbps": 8 * 1000**4,
    "kibps": 8 << 10,
    "mibps": 8 << 20,
    "gibps": 8 << 30,
    "tibps": 8 << 40,
}
MAX_RATE = 8 * 1000**4 * 100  # 800 Tbit/s: above any link, within HTB's 64-bit rates


def parse_rate(value: object) -> int:
    """Bits per second from a rate as tc writes it: "200Mbit", "1Gbit", "25MBps" (bytes)."""
    if not isinstance(value, str):
        raise ValueError(f'expected a rate such as "200Mbit" or "25MBps" (got {value!r})')
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f'not a rate: {value!r} (examples: "200Mbit", "1Gbit", "25MBps")')
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _RATE_UNITS:
        raise ValueError(
            f"unknown rate unit {m.group(2) or '(none)'!r} in {value!r} (as tc: bit, kbit,"
            " mbit, gbit, tbit or kibit, mibit, ... for bits per second; bps, kbps, mbps,"
            " gbps, tbps or kibps, mibps, ... for bytes per second)"
        )
    bits = number * _RATE_UNITS[unit]
    if bits < 8 or not bits < MAX_RATE:
        raise ValueError(f"rate {value!r} is out of range (8bit to 800Tbit per second)")
    return int(bits)


def format_rate(bits: int) -> str:
    """A rate as tc prints it: "200Mbit", "1.5Gbit", "800Kbit"."""
    for unit, n in (("Tbit", 1000**4), ("Gbit", 1000**3), ("Mbit", 1000**2), ("Kbit", 1000)):
        if bits >= n:
            return f"{bits / n:.4g}{unit}"
    return f"{bits}bit"
