"""nxrctl: inspect and steer nxr. Thin: parse arguments, call, format."""

from __future__ import annotations

import sys

import click

from nxrd import __version__
from nxrd.cli.errors import EXIT_ERROR, reported
from nxrd.cli.format import plan_text
from nxrd.errors import ProfileError
from nxrd.plan import Topology, load_topology, make_plan
from nxrd.profile import load_profile


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nxrctl")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(debug: bool) -> None:
    """Inspect and steer nxr, the resource supervisor for ML inference hosts."""


def _topology(path: str | None) -> Topology:
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
@reported
def validate(files: tuple[str, ...], topology_file: str | None) -> None:
    """Check profiles; print every problem, one line each. Exit 0 if all are valid."""
    topo = load_topology(topology_file) if topology_file else None
    failed = False
    for path in files:
        try:
            profile = load_profile(path)
            if topo is not None:
                make_plan(profile, topo, source=path)
        except ProfileError as e:
            failed = True
            for line in e.lines():
                click.echo(line, err=True)
            continue
        fits = f", fits {topology_file}" if topo is not None else ""
        click.echo(f"{path}: ok ({len(profile.workloads)} workloads{fits})")
    if failed:
        sys.exit(EXIT_ERROR)


@cli.command()
@click.argument("file")
@click.option(
    "--topology",
    "topology_file",
    help="Plan for this captured topology (from `nxrd topology`) instead of this host.",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@reported
def plan(file: str, topology_file: str | None, output: str) -> None:
    """Show exactly what nxr would allocate: cores, memory, GPUs, cgroup values, environment."""
    profile = load_profile(file)
    result = make_plan(profile, _topology(topology_file), source=file)
    if output == "json":
        click.echo(result.to_json(), nl=False)
    else:
        click.echo(plan_text(result))
        for warning in result.warnings:
            click.echo(f"{file}: warning: {warning}", err=True)


def main() -> None:
    cli(prog_name="nxrctl")
