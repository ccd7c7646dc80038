"""A profile's replicated workloads, expanded into one workload per replica.

Everything after loading (planner, supervisor, adoption, controller, API) sees replicas as
workloads of their own, each with its own leaf, cores, GPUs, port, state and restarts; only
their names (model/replicas.py) say which declared workload they belong to.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from nxrd.model.paths import FRONT_CONFIG
from nxrd.model.replicas import front_name, replica_name
from nxrd.profile.model import Profile, Workload


def expand(profile: Profile) -> Profile:
    """The profile with each `replicas = N` workload replaced by N replicas (NAME.i, port
    + i, addresses that name the workload's port moved to the replica's), and a front
    (NAME.front) after each workload with `serve`; waiting for a replicated workload means
    waiting for all its replicas."""
    if not any(wl.replicas is not None or wl.serve for wl in profile.workloads.values()):
        return profile
    names = {
        name: [replica_name(name, i) for i in range(wl.replicas)] if wl.replicas else [name]
        for name, wl in profile.workloads.items()
    }
    workloads: dict[str, Workload] = {}
    for name, wl in profile.workloads.items():
        after = tuple(n for dep in wl.after for n in names.get(dep, [dep]))
        for i, instance in enumerate(names[name]):
            update: dict[str, object] = {"after": after}
            if wl.replicas is not None and wl.port is not None:
                update |= _moved(wl, wl.port + i)
            workloads[instance] = wl.model_copy(update=update)
        if wl.serve is not None:
            workloads[front_name(name)] = front(wl)
    return profile.model_copy(update={"workloads": workloads})


def front(wl: Workload) -> Workload:
    """The front of a served workload: HAProxy in master-worker mode, in the foreground, on
    the configuration nxr writes in its working directory (kernel/linux_runtime.py); its
    soft stop (SIGUSR1) lets the requests in flight finish."""
    assert wl.serve is not None
    local = "127.0.0.1" if wl.serve.address in ("0.0.0.0", "::", "*") else wl.serve.address
    return Workload.model_validate(
        {
            "command": ["haproxy", "-W", "-db", "-f", FRONT_CONFIG],
            "class": wl.workload_class,
            "exclusive": False,
            "threads": "off",
            "restart": {"policy": "always", "delay": "100ms"},
            "stop": {"signal": "SIGUSR1", "timeout": wl.serve.timeout},
            "ready": {"tcp": f"{local}:{wl.serve.port}", "interval": "100ms"},
        }
    )


def _moved(wl: Workload, port: int) -> dict[str, object]:
    """A replica's port and the addresses that name the declared port, moved to its own."""
    assert wl.port is not None
    update: dict[str, object] = {"port": port}
    if wl.ready is not None and (wl.ready.http or wl.ready.tcp):
        ready = {
            "http": wl.ready.http and move_url(wl.ready.http, wl.port, port),
            "tcp": wl.ready.tcp and move_address(wl.ready.tcp, wl.port, port),
        }
        update["ready"] = wl.ready.model_copy(update=ready)
    src = wl.slo.source if wl.slo is not None else None
    if wl.slo is not None and src is not None and (src.prometheus or src.probe):
        moved = {
            "prometheus": src.prometheus
            and src.prometheus.model_copy(
                update={"url": move_url(src.prometheus.url, wl.port, port)}
            ),
            "probe": src.probe
            and src.probe.model_copy(update={"url": move_url(src.probe.url, wl.port, port)}),
        }
        update["slo"] = wl.slo.model_copy(update={"source": src.model_copy(update=moved)})
    return update


def url_port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def move_url(url: str, old: int, new: int) -> str:
    parts = urlsplit(url)
    if parts.port != old:
        return url
    host = parts.netloc.rpartition(":")[0]
    return parts._replace(netloc=f"{host}:{new}").geturl()


def address_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def move_address(address: str, old: int, new: int) -> str:
    host, _, port = address.rpartition(":")
    return f"{host}:{new}" if int(port) == old else address
