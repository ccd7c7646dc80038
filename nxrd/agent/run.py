"""`nxrd kubernetes`: the node agent's loop, meant to run as a DaemonSet's pod with the
host's cgroup tree mounted (packaging/kubernetes/nxr-node-agent.yaml)."""

from __future__ import annotations

import json
import select
import signal
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from nxrd.agent.agent_api import AgentHandlers
from nxrd.agent.node_agent import NodeAgent
from nxrd.agent.pods import Driver
from nxrd.api.connections import Connections
from nxrd.api.server import Access, ApiServer
from nxrd.kernel.cgroupfs import LinuxCgroupFS
from nxrd.profile.model import ControllerSettings
from nxrd.supervisor.events import Event, EventLog

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def kubelet_fetcher(
    url: str, token_file: str | None, ca_file: str | None, insecure: bool
) -> Callable[[], object]:
    """A function that GETs the kubelet's pod list: with the pod's service-account token
    and the cluster's CA where they exist (the kubelet's authenticated port)."""
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=ca_file)
        if insecure:  # a kubelet whose serving certificate is self-signed
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

    def fetch() -> object:
        request = urllib.request.Request(url)
        if token_file:
            token = Path(token_file).read_text().strip()
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            return json.loads(r.read(64 << 20))

    return fetch


def run_agent(
    pods_url: str,
    driver: Driver,
    cgroup_root: str,
    node: str | None,
    controller: ControllerSettings,
    token_file: str | None = None,
    ca_file: str | None = None,
    insecure: bool = False,
    socket_path: str = "/run/nxr/nxrd.sock",
    metrics: str | None = None,
) -> None:
    events = EventLog()
    events.sinks.append(_print)
    fetch = kubelet_fetcher(pods_url, token_file, ca_file, insecure)
    fs = LinuxCgroupFS(cgroup_root)
    agent = NodeAgent(fs, fetch, driver, events, time.time, controller, node)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # nxrctl status, top and events against the agent, as against nxrd
    api = ApiServer(socket_path, Access(None, "group"), AgentHandlers(agent))
    servers: list[Connections] = [api]
    if metrics:  # Prometheus, as nxrd's [host] metrics (prometheus_client only when asked)
        from nxrd.api.metrics import MetricsServer

        servers.append(MetricsServer(metrics, agent.status, agent.summary))
    print(f"nxrd kubernetes: pods from {pods_url}, {driver} cgroups in {cgroup_root}", flush=True)
    try:
        while not stop.is_set():
            agent.tick(time.monotonic())
            poller = select.poll()
            for server in servers:
                for fd, mask in server.watched():
                    poller.register(fd, mask)
            for fd, _ in poller.poll(int(min(controller.period, 0.5) * 1000)):
                next(s for s in servers if s.owns(fd)).ready(fd)
            for server in servers:
                server.expire(time.monotonic())
    finally:
        for server in servers:
            server.close()
        agent.close()


def _print(event: Event) -> None:
    inputs = f" {json.dumps(event.data, sort_keys=True)}" if event.data else ""
    move = f" {event.old} -> {event.new}" if event.old or event.new else ""
    print(f"{event.workload}{move}: {event.cause}{inputs}", flush=True)
