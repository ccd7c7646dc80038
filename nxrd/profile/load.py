"""TOML text -> validated Profile, with every problem translated to a one-line message."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nxrd.errors import Problem, ProfileError
from nxrd.profile.checks import check_profile
from nxrd.profile.expand import expand
from nxrd.profile.model import NAME_RE, ControllerSettings, HostSettings, Pool, Profile, Workload

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; raises ProfileError naming the file."""
    return validate_data(_read_toml(Path(path)), str(path))


def parse_profile(text: str, source: str | None = None, expanded: bool = True) -> Profile:
    """Validate TOML text; raises ProfileError with every problem found."""
    return validate_data(_parse_toml(text, source), source, expanded)


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(_read_text(path), str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProfileError(str(path), [Problem("", f"cannot read profile: {reason}")]) from None


def _parse_toml(text: str, source: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(source, [Problem("", f"invalid TOML: {e}")]) from None
    except RecursionError:  # thousands of nested arrays or tables
        raise ProfileError(source, [Problem("", "invalid TOML: nested too deeply")]) from None


def validate_data(
    data: dict[str, Any], source: str | None = None, expanded: bool = True
) -> Profile:
    """Validate an already-parsed document (structure first, then cross-field rules);
    expanded=False: the workloads as declared, before replicas and fronts (expand.py)."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as e:
        problems = translate_errors(e)
        # Cross-field rules still run on the parts that are valid, so one pass shows all.
        partial, declared, dropped = _valid_parts(data)
        if partial is not None:
            problems += check_profile(partial, declared, dropped)
        raise ProfileError(source, problems) from None
    problems = check_profile(profile)
    if problems:
        raise ProfileError(source, problems)
    return expand(profile) if expanded else profile


def _valid_parts(data: Any) -> tuple[Profile | None, set[str], dict[str, set[str]]]:
    """What validates on its own: host, pools, and each workload without its broken keys.

    Returns that partial profile, every declared name ("pool:NAME" for pools) and, per
    workload, the keys left out because they were invalid.
    """
    if not isinstance(data, dict):
        return None, set(), {}

    def table(key: str) -> dict[str, Any]:
        value = data.get(key, {})
        return value if isinstance(value, dict) else {}

    def valid(model: type[BaseModel], raw: Any) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError:
            return None

    host = valid(HostSettings, data.get("host", {})) or HostSettings()
    pools = {k: p for k, v in table("pools").items() if NAME_RE.match(k) and (p := valid(Pool, v))}
    workloads: dict[str, Workload] = {}
    dropped: dict[str, set[str]] = {}
    for name, raw in table("workloads").items():
        if not NAME_RE.match(name) or not isinstance(raw, dict):
            continue
        try:
            workloads[name] = Workload.model_validate(raw)
            continue
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        kept = {k: v for k, v in raw.items() if k not in bad}
        kept.setdefault("command", ["-"])  # stands in for a missing or broken command
        if (wl := valid(Workload, kept)) is not None:
            workloads[name] = wl
            dropped[name] = bad
    declared = set(table("workloads")) | {f"pool:{k}" for k in table("pools")}
    controller = valid(ControllerSettings, data.get("controller", {})) or ControllerSettings()
    partial = Profile.model_construct(
        host=host, pools=pools, workloads=workloads, controller=controller
    )
    return partial, declared, dropped


def dotted(loc: tuple[int | str, ...]) -> str:
    """('workloads', 'chat', 'command', 0) -> 'workloads.chat.command[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _PLAIN_KEY.match(part) else json.dumps(part)  # escapes newlines too
        out += f".{text}" if out else text
    return out


def translate_errors(error: ValidationError) -> list[Problem]:
    """Pydantic's errors as one sentence each, located by dotted field."""
    problems: list[Problem] = []
    for err in error.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p != "[key]")
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            valid = _keys_at(loc[:-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if not close and valid:
                hint = f" (valid keys: {', '.join(valid)})"
            problems.append(Problem(dotted(loc), f"unknown key{hint}"))
            continue
        if kind == "missing":
            problems.append(Problem(dotted(loc), "required key is missing"))
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, ") :]
        else:
            msg = msg[0].lower() + msg[1:]
            got = err.get("input")
            if isinstance(got, str | int | float | bool) and not isinstance(got, dict):
                shown = repr(got)
                msg += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
            elif isinstance(got, dict):
                msg += " (got a table)"
            elif isinstance(got, list):
                msg += " (got a list)"
        problems.append(Problem(dotted(loc), msg))
    # One problem per field is enough: unions report once per alternative.
    seen: set[str] = set()
    unique = []
    for p in problems:
        if p.field not in seen:
            seen.add(p.field)
            unique.append(p)
    return unique


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The valid keys of the table at loc, found by walking the model's annotations."""
    model: Any = Profile
    for part in loc:
        model = _unwrap(model)
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = _field_by_key(model, str(part))
            if field is None:
                return []
            model = field.annotation
        elif typing.get_origin(model) is dict:
            model = typing.get_args(model)[1]
        else:
            return []
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _field_by_key(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if (field.alias or name) == key:
            return field
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so the table's model shows."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def load_profiles(paths: list[str], expanded: bool = True) -> tuple[Profile, str]:
    """One profile from files and directories of *.toml (merged); returns it and its source name.

    Workloads and pools may not be declared twice; [host] keys may not conflict.
    """
    return parse_profiles(read_profiles(paths), expanded)


def read_profiles(
    paths: list[str], allow_empty: bool = False, guarded: bool = False
) -> list[tuple[str, str]]:
    """(name, TOML text) of each file, directories expanded to their *.toml in name order
    (allow_empty: a directory without any is no profile, not an error; guarded: refuse
    files and directories that someone other than root or nxrd's user may change)."""
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if guarded:
            _guard(path)
        if path.is_dir():
            found = sorted(path.glob("*.toml"))
            if not found and not allow_empty:
                raise ProfileError(str(path), [Problem("", "no *.toml profiles in this directory")])
            files += found
        else:
            files.append(path)
    if guarded:
        for f in files:
            _guard(f)
    return [(str(f), _read_text(f)) for f in files]


def _guard(path: Path) -> None:
    """A profile names commands and the users they run as, root included: one that another
    user may edit (or add to, for a directory) would be their way to root, as sshd's
    StrictModes refuses such key files."""
    try:
        st = path.stat()
    except OSError:
        return  # missing: reading it says so
    owners = {0, os.geteuid()}
    problem = None
    if st.st_uid not in owners:
        problem = f"owned by uid {st.st_uid}, not root"
    elif st.st_mode & 0o022:
        problem = f"writable by group or others (mode {st.st_mode & 0o7777:04o})"
    if problem:
        raise ProfileError(
            str(path),
            [
                Problem(
                    "",
                    f"{problem}: whoever may edit it may run anything as root",
                )
            ],
        )


def parse_profiles(files: list[tuple[str, str]], expanded: bool = True) -> tuple[Profile, str]:
    """One profile from (name, TOML text) pairs, merged as load_profiles describes."""
    if len(files) == 1:
        name, text = files[0]
        return parse_profile(text, name, expanded), name
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for f, text in files:
        data = _parse_toml(text, f)
        for section, table in data.items():
            if not isinstance(table, dict):
                merged[section] = table
                continue
            target = merged.setdefault(section, {})
            for key, value in table.items():
                where = f"{section}.{key}"
                if key in target and (section != "host" or target[key] != value):
                    problems.append(Problem(where, f"declared in both {origin[where]} and {f}"))
                    continue
                target[key] = value
                origin[where] = str(f)
    source = ", ".join(f for f, _ in files)
    if problems:
        raise ProfileError(source, problems)
    return validate_data(merged, source, expanded), source
