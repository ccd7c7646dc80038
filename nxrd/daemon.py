"""nxrd: the composition root, the one place that wires the real implementations."""

from __future__ import annotations

import click

from nxrd import __version__
from nxrd.cli.errors import reported
from nxrd.errors import NxrError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nxrd")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(debug: bool) -> None:
    """nxrd: runs ML workloads in isolated cgroup v2 leaves."""


@cli.command()
@click.option(
    "-o",
    "--output",
    default=None,
    help="Write the JSON to this file instead of stdout.",
)
@click.option("--summary", is_flag=True, help="Print a short human summary instead of JSON.")
@click.option("--no-gpus", is_flag=True, help="Skip NVML discovery.")
@reported
def topology(output: str | None, summary: bool, no_gpus: bool) -> None:
    """Capture this host's topology (CPUs, cores, NUMA, memory, GPUs, cgroup v2) as JSON."""
    from nxrd.cli.format import topology_text
    from nxrd.kernel.discovery import discover

    topo = discover(gpus=not no_gpus)
    if summary:
        click.echo(topology_text(topo))
    elif output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(topo.to_json())
        except OSError as e:
            raise NxrError(f"cannot write {output}: {e.strerror}") from None
        click.echo(f"wrote {output}")
    else:
        click.echo(topo.to_json(), nl=False)


@cli.command()
@reported
def check() -> None:
    """Check that this host can isolate workloads: cgroup v2, controllers, a writable subtree."""
    import sys

    from nxrd.kernel.discovery import cgroup_info
    from nxrd.kernel.requirements import check as requirements
    from nxrd.kernel.requirements import usable

    reqs = requirements(cgroup_info())
    for req in reqs:
        click.echo(req.line())
    if not usable(reqs):
        click.echo("nxrd cannot isolate workloads on this host; it will refuse to start.", err=True)
        sys.exit(1)


def main() -> None:
    cli(prog_name="nxrd")
