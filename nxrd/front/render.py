"""An HAProxy configuration for one served workload: pure, profile in, text out.

HAProxy does the per-request work (caps, queue, priorities, deadlines, Retry-After); nxr
only says what the profile declares, in HAProxy's terms (its 2.6 configuration manual):

- a replica's in-flight cap is its server's `maxconn`: HAProxy never has more requests at
  it, and queues the rest in the backend;
- the queue's bound is a `return status 429` when `queue(backend)` already holds that many
  (half that many, for low priority): one thread (`nbthread 1`) evaluates that and
  enqueues, so the bound is exact;
- `timeout queue` drops a request that waited past its deadline (a 503), and
  `http-error status 503` adds Retry-After to it and to "no replica up";
- `set-priority-class` from the priority header: a lower class leaves the queue first;
- refused requests counted by priority in a stick table (`show table NAME.shed`);
- a priority listed in `held.map` (through the runtime API: `add map`) is refused with 503
  and Retry-After before it queues, counted in `NAME.held`: nxr holds back the lowest
  priorities while the model is at its limit;
- each request logged (requests.LOG_FORMAT) to nxrd's latency socket, whose path the front
  gets in its environment (NXR_LATENCY_SOCKET, which HAProxy expands): nxrd makes the
  queue-wait histograms of it, and the latency a `slo.source.front` keeps to its SLO; the
  front's own log (its stdout) keeps the failed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nxrd.front.requests import LOG_FORMAT
from nxrd.latency import DEFAULT_SOCKET
from nxrd.model.paths import FRONT_HELD, FRONT_SOCKET
from nxrd.profile.model import Serve, Workload

HIGH = ("high", "latency-critical", "interactive")
LOW = ("low", "batch", "background")


@dataclass(frozen=True)
class Server:
    name: str  # the replica's workload name
    port: int


def defaults(serve: Serve, wl: Workload) -> tuple[int, float]:
    """The in-flight cap per replica and the queue timeout the profile leaves to nxr."""
    inflight = serve.inflight or wl.cpus or 1
    if serve.queue_timeout is not None:
        return inflight, serve.queue_timeout
    return inflight, wl.slo.target[1] if wl.slo is not None else 1.0


def shed_table(group: str) -> str:
    """The stick table that counts requests refused on a full queue, by priority."""
    return f"{group}.shed"


def held_table(group: str) -> str:
    """The stick table that counts requests of held-back priorities, by priority."""
    return f"{group}.held"


def serves(config: str, server: str) -> bool:
    """Whether a rendered configuration has this replica among its servers."""
    return f"\n    server {server} " in config


def bound(config: str) -> tuple[str, int] | None:
    """The address and port a rendered configuration listens on."""
    for line in config.splitlines():
        if line.startswith("    bind "):
            address, _, port = line.removeprefix("    bind ").rpartition(":")
            return address, int(port)
    return None


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


# A replica that refuses a connection is down from that moment, not from its next check:
# otherwise leastconn, which prefers the server with the fewest requests, sends every new
# request (and every redispatched one) to the dead replica until the check notices.
PASSIVE = " observe layer4 error-limit 1 on-error mark-down"


def _check(wl: Workload) -> tuple[list[str], str]:
    """Backend lines and the server options that check a replica the way its readiness is."""
    if wl.ready is None or (wl.ready.http is None and wl.ready.tcp is None):
        return [], ""
    option = f" check inter {_ms(wl.ready.interval)}{PASSIVE}"
    if wl.ready.http is None:
        return [], option
    parts = urlsplit(wl.ready.http)
    uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ["option httpchk", f"http-check send meth GET uri {uri}"], option


def render(group: str, wl: Workload, servers: list[Server]) -> str:
    """The whole configuration of `group`'s front."""
    serve = wl.serve
    assert serve is not None
    inflight, queue_timeout = defaults(serve, wl)
    queue = serve.queue if serve.queue is not None else inflight * len(servers)
    by_header = f"req.hdr({serve.priority_header}) -i"
    held = f"{{ var(txn.priority),map({FRONT_HELD}) -m found }}"
    # low priority may fill half the queue: the rest is kept for the others
    low_queue = (queue + 1) // 2
    full = (
        f"{{ queue({group}) ge {queue} }}"
        f" || {{ var(txn.priority) -m str low }} {{ queue({group}) ge {low_queue} }}"
    )
    retry = f'hdr Retry-After "{serve.retry_after}"'
    check_lines, check = _check(wl)
    lines = [
        "# Written by nxrd from its profile; edits are overwritten.",
        "global",
        "    nbthread 1",
        # the worker, which talks to clients, drops root once it has bound its sockets (the
        # user Debian's haproxy package creates); the master stays root to reload
        "    user haproxy",
        "    group haproxy",
        f"    stats socket unix@{FRONT_SOCKET} mode 600 level admin",
        "    log stdout format raw daemon",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    timeout connect 1s",
        "    timeout client 60s",
        f"    timeout server {_ms(serve.timeout)}",
        f"    timeout queue {_ms(queue_timeout)}",
        "",
        f"frontend {group}",
        f"    bind {serve.address}:{serve.port}",
        # every request to nxrd; to the front's own log only those that failed (a 5xx or
        # an error is logged at level err)
        "    no log",
        f'    log "unix@${{NXR_LATENCY_SOCKET-{DEFAULT_SOCKET}}}" format raw local0',
        "    log stdout format raw daemon err",
        f'    log-format "{LOG_FORMAT}"',
        "    option log-separate-errors",
        f"    http-request set-var(txn.priority) str(high) if {{ {by_header} {' '.join(HIGH)} }}",
        f"    http-request set-var(txn.priority) str(low) if {{ {by_header} {' '.join(LOW)} }}",
        "    http-request set-var(txn.priority) str(normal) unless { var(txn.priority) -m found }",
        "    http-request set-priority-class int(-1) if { var(txn.priority) -m str high }",
        "    http-request set-priority-class int(1) if { var(txn.priority) -m str low }",
        # priorities held back while the model is at its limit (the map is filled through
        # the runtime API), counted by priority, then refused
        f"    http-request track-sc1 var(txn.priority) table {held_table(group)} if {held}",
        f"    http-request return status 503 content-type text/plain {retry}"
        f' string "{group}: this priority is held back while the model is at its limit"'
        f" if {held}",
        # counted by priority in the shed table (`show table`), then refused
        f"    http-request track-sc0 var(txn.priority) table {shed_table(group)} if {full}",
        f"    http-request return status 429 content-type text/plain {retry}"
        f' string "{group}: every replica is busy and the queue is full"'
        f" if {full}",
        f"    default_backend {group}",
        "",
        f"backend {group}",
        f"    balance {serve.balance}",
        # One request per server connection: maxconn then counts requests, never an idle
        # kept-alive connection.
        "    http-reuse never",
        "    option http-server-close",
        # a replica that refuses the connection (it just died) costs the request nothing:
        # it is tried once more, on another replica
        "    retries 1",
        "    option redispatch 1",
        f"    http-error status 503 content-type text/plain {retry}"
        f' string "{group}: no replica could take the request in time"',
        *(f"    {line}" for line in check_lines),
        *(f"    server {s.name} 127.0.0.1:{s.port} maxconn {inflight}{check}" for s in servers),
        "",
        f"backend {shed_table(group)}",
        "    stick-table type string len 8 size 8 store http_req_cnt",
        "",
        f"backend {held_table(group)}",
        "    stick-table type string len 8 size 8 store http_req_cnt",
    ]
    return "\n".join(lines) + "\n"
