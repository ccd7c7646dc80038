"""Package names that load their module on first use (PEP 562).

nxrctl's socket commands must start fast and import neither pydantic nor kernel code, so
the packages whose modules pull those in resolve their names only when asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module __getattr__ resolving each name in `where` from the module it names."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
