"""The `nxrd` command line: run the daemon (daemon/core.py builds it), check, topology."""

from __future__ import annotations

import os
import signal
import sys

import click

from nxrd import __version__
from nxrd.cli.options import Group
from nxrd.cli.reporting import reported
from nxrd.errors import NxrError
from nxrd.model.paths import DEFAULT_STATE_DIR


@click.group(
    cls=Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="nxrd")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="Profile file or directory of *.toml files (repeatable). Runs the daemon.",
)
@click.option(
    "--state-dir",
    default=lambda: os.environ.get("STATE_DIRECTORY", DEFAULT_STATE_DIR),
    show_default="$STATE_DIRECTORY or /var/lib/nxr",
    help="Where workload status files, logs and the adoption state live.",
)
@click.option(
    "--cgroup-root",
    default=None,
    help="Absolute path of the cgroup to own, or unit:NAME for a running systemd unit's "
    "(default: the systemd unit's, else <cgroup2>/nxr).",
)
@click.option(
    "--on-stop",
    type=click.Choice(["stop", "leave"]),
    default="stop",
    show_default=True,
    help="On SIGTERM/SIGINT: stop every workload first, or leave them running for the next "
    "nxrd to adopt.",
)
@click.option(
    "--socket",
    "socket_path",
    default=lambda: os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/nxr"), "nxrd.sock"),
    show_default="$RUNTIME_DIRECTORY/nxrd.sock or /run/nxr/nxrd.sock",
    help="The control API's unix socket.",
)
@click.option(
    "--api-group",
    default="nxr",
    show_default=True,
    help="Group whose members may start and stop workloads (besides root).",
)
@click.option(
    "--api-read",
    type=click.Choice(["group", "all"]),
    default="group",
    show_default=True,
    help="Who may read status: root and the API group (socket 0660), or every local user "
    "(socket 0666).",
)
@click.pass_context
@reported
def cli(
    ctx: click.Context,
    debug: bool,
    profiles: tuple[str, ...],
    state_dir: str,
    cgroup_root: str | None,
    on_stop: str,
    socket_path: str,
    api_group: str,
    api_read: str,
) -> None:
    """nxrd: runs ML workloads in isolated cgroup v2 leaves.

    With --profile, runs in the foreground until SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not profiles:
        click.echo(ctx.get_help())
        sys.exit(2)
    from nxrd.daemon.core import Daemon

    if cgroup_root is not None and cgroup_root.startswith("unit:"):
        from nxrd.kernel.subtree import unit_cgroup

        cgroup_root = unit_cgroup(cgroup_root.removeprefix("unit:"))
    daemon = Daemon(
        list(profiles), state_dir, cgroup_root, on_stop, socket_path, api_group, api_read
    )
    # Caught before start(), not at the loop: a SIGTERM while nxrd starts (adopting, moving
    # interrupts) is then a clean stop that gives the machine back, not the default death.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: daemon.signals.append(s))
    daemon.start()
    sys.exit(daemon.loop())


@cli.command()
@click.option(
    "-o",
    "--output",
    default=None,
    help="Write the JSON to this file instead of stdout (-o json: to stdout, as nxrctl's "
    "-o reads; -o table: the summary; ./json for a file of that name).",
)
@click.option("--summary", is_flag=True, help="Print a short human summary instead of JSON.")
@click.option("--no-gpus", is_flag=True, help="Skip NVML discovery.")
@reported
def topology(output: str | None, summary: bool, no_gpus: bool) -> None:
    """Capture this host's topology (CPUs, cores, NUMA, memory, GPUs, cgroup v2) as JSON."""
    from nxrd.cli.format import topology_text
    from nxrd.kernel.discovery import discover

    # nxrctl's -o names a format: read the same words the same way here, not as file names
    if output in ("json", "table"):
        summary, output = summary or output == "table", None
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

    from nxrd.kernel import devices
    from nxrd.kernel.discovery import cgroup_info
    from nxrd.kernel.gpu import discover_gpus
    from nxrd.kernel.requirements import check as requirements
    from nxrd.kernel.requirements import gpu_check, usable

    reqs = requirements(cgroup_info())
    gpus, note = discover_gpus()
    gpu_reqs = gpu_check(len(gpus), note, devices.support() if gpus else None)
    from nxrd.kernel.shaper import Shaper, egress_requirement

    for req in reqs + gpu_reqs:
        click.echo(req.line())
    # optional: only a profile with `net` needs it, so it never fails the check
    ok, detail = egress_requirement(Shaper())
    click.echo(f"{'ok' if ok else 'absent':8} egress: {detail}")
    from nxrd.kernel.housekeeping import HostCpus, isolation_report

    for line in isolation_report(HostCpus()):
        click.echo(line)
    from nxrd.kernel.block import Disks

    for disk in Disks().list():
        how = disk.enforced()
        why = {
            "io.cost": "io.cost is on",
            "bfq": "the BFQ scheduler reads io.bfq.weight (nxrd writes it)",
            None: f"scheduler {disk.scheduler}, io.cost off: nxrd turns io.cost on when a "
            "profile sets io_weight"
            if disk.iocost is not None
            else f"scheduler {disk.scheduler} and no io.cost in this kernel",
        }[how]
        click.echo(f"{'ok' if how else 'absent':8} I/O {disk.name} ({disk.devno}): {why}")
    if not usable(reqs):
        click.echo("nxrd cannot isolate workloads on this host; it will refuse to start.", err=True)
        sys.exit(1)
    if not usable(gpu_reqs):
        click.echo("nxrd would start, but no workload could: each needs a device filter.", err=True)
        sys.exit(1)


@cli.command()
@click.option(
    "--pods-url",
    default="https://127.0.0.1:10250/pods",
    show_default=True,
    help="The kubelet's pod list (its authenticated port; http:// for a read-only one).",
)
@click.option(
    "--cgroup-driver",
    type=click.Choice(["systemd", "cgroupfs"]),
    default="systemd",
    show_default=True,
    help="The kubelet's cgroupDriver: how its pods' cgroups are named.",
)
@click.option("--cgroup-mount", help="The host's cgroup2 mount, as the agent sees it.")
@click.option("--node", envvar="NODE_NAME", help="Only this node's pods ($NODE_NAME).")
@click.option(
    "--controller",
    "controller_file",
    help="A profile whose [controller] table tunes the ladder (default: its defaults).",
)
@click.option("--token-file", help="Bearer token for the kubelet (default: the pod's own).")
@click.option("--ca-file", help="CA of the kubelet's certificate (default: the cluster's).")
@click.option(
    "--metrics",
    help="Serve Prometheus metrics at http://ADDRESS/metrics (host:port), as nxrd's "
    "[host] metrics.",
)
@click.option(
    "--insecure-kubelet-tls",
    is_flag=True,
    help="Accept the kubelet's certificate unchecked (a self-signed serving certificate).",
)
@reported
def kubernetes(
    pods_url: str,
    cgroup_driver: str,
    cgroup_mount: str | None,
    node: str | None,
    controller_file: str | None,
    token_file: str | None,
    ca_file: str | None,
    insecure_kubelet_tls: bool,
    metrics: str | None,
) -> None:
    """Run as a Kubernetes node agent: the latency controller over this node's pods
    exported by `nxrctl export kubernetes` (docs/kubernetes.md). It answers nxrctl status,
    top and events on nxrd's --socket."""
    from nxrd.agent.pods import Driver
    from nxrd.agent.run import SERVICE_ACCOUNT, run_agent
    from nxrd.kernel.host import CGROUP2_MOUNT
    from nxrd.profile.load import load_profiles
    from nxrd.profile.model import ControllerSettings

    controller = (
        load_profiles([controller_file])[0].controller if controller_file else ControllerSettings()
    )
    account = {n: SERVICE_ACCOUNT / n for n in ("token", "ca.crt")}
    token = token_file or (str(account["token"]) if account["token"].exists() else None)
    ca = ca_file or (str(account["ca.crt"]) if account["ca.crt"].exists() else None)
    driver: Driver = "systemd" if cgroup_driver == "systemd" else "cgroupfs"
    mount = cgroup_mount or CGROUP2_MOUNT
    socket_path = click.get_current_context().find_root().params["socket_path"]
    run_agent(
        pods_url,
        driver,
        mount,
        node,
        controller,
        token,
        ca,
        insecure_kubelet_tls,
        socket_path,
        metrics,
    )


@cli.command("restore-host")
@click.pass_context
@reported
def restore_host(ctx: click.Context) -> None:
    """Give the machine back the CPUs nxrd kept it off (slices, interrupts, workqueues) and
    turn off the io.cost it turned on: what <state-dir>/host.json and io.json saved. The
    unit's ExecStopPost=, so that it runs after a crash too; nothing saved, nothing done."""
    from pathlib import Path

    from nxrd.daemon import io_cost, isolation
    from nxrd.kernel.block import Disks
    from nxrd.kernel.housekeeping import HostCpus

    state = Path(ctx.parent.params["state_dir"] if ctx.parent else DEFAULT_STATE_DIR)
    for path in (state / isolation.FILE, state / io_cost.FILE):
        if path.exists():
            if path.name == isolation.FILE:
                problems = isolation.give_back(HostCpus(), path)
            else:
                problems = io_cost.give_back(Disks(), path)
            for problem in problems:
                click.echo(f"nxrd: {problem}", err=True)
            click.echo(f"gave back what {path} saved")


def main() -> None:
    cli(prog_name="nxrd")
