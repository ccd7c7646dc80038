"""nxrctl export: a profile rendered for another engine (docs/kubernetes.md)."""

from __future__ import annotations

import click

from nxrd.cli.reporting import reported


@click.group()
def export() -> None:
    """Render a profile for another engine."""


@export.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="[WORKLOAD=]IMAGE",
    help="Container image of a workload, or of every workload not named (repeatable).",
)
@click.option("-n", "--namespace", help="Namespace of every object (default: none set).")
@click.option(
    "--kubelet",
    is_flag=True,
    help="Print instead the KubeletConfiguration the node needs (CPU, topology and memory "
    "managers, reserved CPUs).",
)
@reported
def kubernetes(
    files: tuple[str, ...], images: tuple[str, ...], namespace: str | None, kubelet: bool
) -> None:
    """Kubernetes manifests for a profile (FILES: profiles or directories, as nxrd reads
    them): a PriorityClass per class, a Deployment per workload (a Job when it is not
    restarted), a Service per served model. What Kubernetes cannot express is a warning on
    stderr, one line each."""
    import yaml

    from nxrd.export.kubelet import kubelet_config
    from nxrd.export.kubernetes import export as render
    from nxrd.profile.load import load_profiles

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True  # no &id001 anchors: each document reads on its own

    profile, source = load_profiles(list(files), expanded=False)
    if kubelet:
        click.echo("# Merge into the node's kubelet configuration (docs/kubernetes.md).")
        click.echo(yaml.dump(kubelet_config(profile), Dumper=Dumper, sort_keys=False), nl=False)
        return
    by_name: dict[str, str] = {}
    for item in images:
        name, _, image = item.rpartition("=")
        if name and name not in profile.workloads:
            raise click.BadParameter(f"no workload {name!r} in the profile", param_hint="--image")
        by_name[name] = image
    result = render(profile, by_name, namespace, source=source)
    click.echo(yaml.dump_all(result.documents, Dumper=Dumper, sort_keys=False), nl=False)
    for line in result.warnings:
        click.echo(f"{source}: warning: {line}", err=True)
