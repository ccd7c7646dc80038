"""nxrctl: inspect and steer nxr. Thin: parse arguments, call, format."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nxrd import __version__
from nxrd.api.client import ApiCallError, Client
from nxrd.api.protocol import DEFAULT_SOCKET
from nxrd.cli.export import export
from nxrd.cli.format import (
    changes_table,
    event_line,
    explain_text,
    log_since,
    plan_text,
    show_text,
    status_table,
    top_screen,
)
from nxrd.cli.options import Group
from nxrd.cli.reporting import EXIT_ERROR, reported
from nxrd.errors import NxrError, ProfileError
from nxrd.model.paths import DEFAULT_STATE_DIR, log_file

if TYPE_CHECKING:
    from nxrd.plan import Topology


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nxrctl")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option(
    "--socket",
    "socket_path",
    envvar="NXR_SOCKET",
    default=DEFAULT_SOCKET,
    show_default=True,
    help="nxrd's control socket (or $NXR_SOCKET).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, socket_path: str) -> None:
    """Inspect and steer nxr, the resource supervisor for ML inference hosts.

    Exit codes: 0 ok; 1 error (invalid profile, nxrd unreachable, refused request);
    2 usage error; 3 the workload asked about is not running.
    """
    ctx.obj = Client(socket_path)


def _topology(path: str | None) -> Topology:
    from nxrd.plan import load_topology

    if path is not None:
        return load_topology(path)
    # Only planning for this host needs discovery; other commands never import kernel code.
    from nxrd.kernel.discovery import discover

    return discover()


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--topology",
    "topology_file",
    help="Also check that each profile fits this captured host topology (JSON).",
)
@click.option(
    "--this-host",
    is_flag=True,
    help="Also check that each profile fits this host, as nxrd would plan it here.",
)
@reported
def validate(files: tuple[str, ...], topology_file: str | None, this_host: bool) -> None:
    """Check profiles (files, or directories of *.toml read as one profile, as nxrd reads
    them); print every problem, one line each. Exit 0 if all are valid."""
    from nxrd.plan import make_plan
    from nxrd.profile.load import load_profiles

    if topology_file and this_host:
        raise click.UsageError("--topology and --this-host: give one host to check against")
    topo = _topology(topology_file) if topology_file or this_host else None
    failed = False
    for path in files:
        try:
            profile, source = load_profiles([path])
            if topo is not None:
                make_plan(profile, topo, source=source)
        except ProfileError as e:
            failed = True
            for line in e.lines():
                click.echo(line, err=True)
            continue
        where = "this host" if this_host else topology_file
        fits = f", fits {where}" if topo is not None else ""
        click.echo(f"{path}: ok ({len(profile.workloads)} workloads{fits})")
    if failed:
        sys.exit(EXIT_ERROR)


@cli.command()
@click.argument("files", nargs=-1)
@click.option(
    "--topology",
    "topology_file",
    help="Plan for this captured topology (from `nxrd topology`) instead of this host.",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
@reported
def plan(client: Client, files: tuple[str, ...], topology_file: str | None, output: str) -> None:
    """Show exactly what nxr allocates: cores, memory, GPUs, cgroup values, environment.

    Without FILES: the running nxrd's plan. With FILES (profiles or directories): what nxr
    would plan for them on this host, or on the --topology given.
    """
    from nxrd.plan import Plan, make_plan
    from nxrd.profile.load import load_profiles

    if files:
        profile, source = load_profiles(list(files))
        result = make_plan(profile, _topology(topology_file), source=source)
    else:
        result = Plan.model_validate(client.call("GET", "plan"))
        source = "nxrd"
    if output == "json":
        click.echo(result.to_json(), nl=False)
    else:
        click.echo(plan_text(result))
        for warning in result.warnings:
            click.echo(f"{source}: warning: {warning}", err=True)


OUTPUT = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
EXIT_NOT_RUNNING = 3


@cli.command()
@OUTPUT
@click.pass_obj
@reported
def status(client: Client, output: str) -> None:
    """Every workload: state, PID, CPUs, memory, GPUs, restarts and why."""
    body = client.call("GET", "workloads")
    if output == "json":
        click.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        click.echo(status_table(body["workloads"], body.get("gpus", [])))


@cli.command()
@click.argument("name")
@OUTPUT
@click.pass_obj
@reported
def show(client: Client, name: str, output: str) -> None:
    """One workload in detail. Exit 3 when it is not running."""
    body = client.call("GET", f"workloads/{name}")
    click.echo(json.dumps(body, indent=2, sort_keys=True) if output == "json" else show_text(body))
    if body["state"] not in ("starting", "ready", "stopping"):
        sys.exit(EXIT_NOT_RUNNING)


def _mutation(verb: str) -> None:
    @cli.command(name=verb, help=f"{verb.capitalize()} workloads, each in turn.")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_obj
    @reported
    def command(client: Client, names: tuple[str, ...]) -> None:
        failed = False
        for name in names:  # one refused (unknown, not allowed) does not stop the others
            try:
                body = client.call("POST", f"workloads/{name}/{verb}")
            except ApiCallError as e:
                click.echo(f"error: {e}", err=True)
                failed = True
                continue
            for w in body.get("workloads", [body.get("workload")]):  # a group: its replicas
                click.echo(f"{w['name']}: {w['state']} ({w['reason']})")
        if failed:
            sys.exit(EXIT_ERROR)


for _verb in ("start", "stop", "restart", "freeze", "thaw"):
    _mutation(_verb)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("--workload", default=None, help="Only this workload's events.")
@OUTPUT
@click.pass_obj
@reported
def events(client: Client, follow: bool, workload: str | None, output: str) -> None:
    """State changes with their causes, oldest first."""
    since = 0
    while True:
        body = client.call("GET", "events", since=since, workload=workload)
        for e in body["events"]:
            click.echo(json.dumps(e, sort_keys=True) if output == "json" else event_line(e))
        since = body["last"]
        if not follow:
            return
        time.sleep(0.5)


@cli.command()
@click.argument("name")
@click.option(
    "-n", "--lines", type=int, default=None, help="Last lines only (default 100; all with --since)."
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option(
    "--since",
    default=None,
    help='Only lines from this long ago ("10m", "1h30m") or since this local time '
    '("2026-12-06T14:00", "14:00").',
)
@click.option(
    "--state-dir",
    envvar="NXR_STATE_DIR",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="nxrd's state directory, read directly when nxrd is not running (or $NXR_STATE_DIR).",
)
@click.pass_obj
@reported
def logs(
    client: Client, name: str, lines: int | None, follow: bool, since: str | None, state_dir: str
) -> None:
    """A workload's output (stdout and stderr, timestamped), from nxrd's log file; read
    directly from the state directory when nxrd is not running."""
    cutoff = None if since is None else log_since(since, time.time())
    try:
        text, offset = _log_text(client, name, whole=cutoff is not None)
    except ApiCallError:
        raise
    except NxrError:  # nxrd is not running: the file itself, if this user may read it
        path = log_file(Path(state_dir), name)
        try:
            text, offset = path.read_text(errors="replace"), 0
        except OSError as e:
            raise NxrError(f"nxrd is not running, and {path}: {e.strerror}") from None
        click.echo(f"nxrd is not running: reading {path}", err=True)
        follow = False
    shown = text.splitlines(keepends=True)
    if cutoff is not None:
        shown = [line for line in shown if line[:19] >= cutoff]
    if lines is not None or cutoff is None:
        keep = 100 if lines is None else lines
        shown = shown[-keep:] if keep > 0 else []
    click.echo("".join(shown), nl=False)
    while follow:
        time.sleep(0.5)
        body = client.call("GET", f"workloads/{name}/logs", offset=offset)
        if body["size"] < offset:
            offset = 0  # rotated: the new file from its start
            continue
        click.echo(body["text"], nl=False)
        offset = body["offset"]


def _log_text(client: Client, name: str, whole: bool) -> tuple[str, int]:
    """The log's last chunk (whole: all of the current file), and the offset after it."""
    body = client.call("GET", f"workloads/{name}/logs", offset=0 if whole else -256 * 1024)
    text = body["text"]
    if body["offset"] - len(text.encode()) > 0:
        text = text.split("\n", 1)[-1]  # started mid-line
    while whole and body["offset"] < body["size"]:
        body = client.call("GET", f"workloads/{name}/logs", offset=body["offset"])
        text += body["text"]
    return text, int(body["offset"])


@cli.command()
@click.argument("name")
@OUTPUT
@click.pass_obj
@reported
def explain(client: Client, name: str, output: str) -> None:
    """For each resource of a workload: asked for in the profile, planned, last written (by
    whom and why), and what the kernel has now."""
    body = client.call("GET", f"workloads/{name}/explain")
    click.echo(
        json.dumps(body, indent=2, sort_keys=True) if output == "json" else explain_text(body)
    )


@cli.command()
@click.option("-d", "--delay", type=float, default=1.0, show_default=True, help="Seconds between.")
@click.option("-n", "--iterations", type=int, default=0, help="Stop after this many (0: never).")
@click.pass_obj
@reported
def top(client: Client, delay: float, iterations: int) -> None:
    """Live view of every workload, busiest first, refreshed in place (Ctrl-C quits)."""
    import shutil

    tty = sys.stdout.isatty()
    done = 0
    try:
        while True:
            body = client.call("GET", "workloads")
            width = shutil.get_terminal_size().columns if tty else 10_000
            screen = top_screen(body["workloads"], time.time(), width)
            # Home and clear on a terminal; plain frames separated by a blank line otherwise.
            click.echo(("\x1b[H\x1b[2J" + screen) if tty else screen + "\n")
            done += 1
            if iterations and done >= iterations:
                return
            time.sleep(delay)
    except KeyboardInterrupt:
        return


def _send_profile(client: Client, files: tuple[str, ...], dry_run: bool) -> dict[str, Any]:
    """Check the profile here first (every problem, one line each), then let nxrd plan it."""
    from nxrd.profile.load import parse_profiles, read_profiles

    texts = read_profiles(list(files))
    parse_profiles(texts)
    body = {"files": [{"name": n, "text": t} for n, t in texts]}
    return client.call("POST", "apply", body=body, dry_run=1 if dry_run else None)


def _print_changes(body: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    click.echo(changes_table(body["changes"]))
    for warning in body.get("warnings", []):
        click.echo(f"{body['source']}: warning: {warning}", err=True)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@OUTPUT
@click.pass_obj
@reported
def diff(client: Client, files: tuple[str, ...], output: str) -> None:
    """What `apply FILES` would change in the running nxrd, and how each change lands."""
    _print_changes(_send_profile(client, files, dry_run=True), output)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@OUTPUT
@click.pass_obj
@reported
def apply(client: Client, files: tuple[str, ...], output: str) -> None:
    """Apply a changed profile to the running nxrd, touching only what changed.

    Cores, memory and weights change live; a changed command, environment, user or class
    restarts that workload. All or nothing: if any part is refused, nothing changes. nxrd
    keeps using it across its own restarts until the configured profile changes or is
    reloaded.
    """
    body = _send_profile(client, files, dry_run=False)
    _print_changes(body, output)
    if output != "json":
        click.echo(f"applied {len(body['changes'])} changes from {body['source']}")


@cli.group()
def gpu() -> None:
    """GPUs: lift a quarantine."""


@gpu.command(name="release")
@click.argument("index", type=int)
@click.pass_obj
@reported
def gpu_release(client: Client, index: int) -> None:
    """Lift GPU INDEX's quarantine (after fixing or checking it): it is placed on again, and
    quarantined again at once if it still fails."""
    body = client.call("POST", f"gpus/{index}/release")
    click.echo(f"GPU {body['gpu']} ({body['uuid']}) released; it was quarantined: {body['was']}")


@cli.command()
@OUTPUT
@click.pass_obj
@reported
def reload(client: Client, output: str) -> None:
    """Re-read nxrd's configured profile and apply it (what `systemctl reload nxrd` runs)."""
    body = client.call("POST", "reload")
    _print_changes(body, output)
    if output != "json":
        click.echo(f"reloaded {body['source']}: {len(body['changes'])} changes")


cli.add_command(export)


def main() -> None:
    cli(prog_name="nxrctl")
