"""The profile language: one pydantic declaration per key, used for validation and docs.

Structure and single-field rules live here; rules that relate several fields or
workloads live in ``checks.py`` so every problem of a file is reported at once.
"""

from __future__ import annotations

import ipaddress
import re
import signal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from nxrd.model.classes import CLASSES, WorkloadClass
from nxrd.model.units import (
    parse_cpu_list,
    parse_cpu_quota,
    parse_duration,
    parse_rate,
    parse_size,
)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would accept a trailing newline


class Syntax:
    """Marks a field's value syntax for the generated docs ("size", "duration"...)."""

    def __init__(self, label: str) -> None:
        self.label = label


def _size_or_max(value: object) -> int | None:
    if value == "max" or value == "infinity":
        return None
    return parse_size(value)


def _check_name(kind: str) -> Any:
    def check(name: str) -> str:
        if not NAME_RE.match(name):  # anchored at the start by match(), at the end by \Z
            raise ValueError(
                f"invalid {kind} name {name!r}: use 1-63 characters from a-z, 0-9, '_' and '-', "
                "starting with a letter or digit (it becomes a cgroup directory name)"
            )
        return name

    return check


def _signal_name(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"no such signal number: {value}") from None
    if not isinstance(value, str):
        raise ValueError(f'expected a signal name such as "SIGTERM" (got {value!r})')
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
        if name in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"{name} cannot be the stop signal; nxr kills after stop.timeout")
        raise ValueError(f'unknown signal {value!r} (examples: "SIGTERM", "SIGINT")')
    return name


def _gpus(value: object) -> int | tuple[int | str, ...]:
    if isinstance(value, bool):
        raise ValueError("expected a GPU count or a list of GPU indices/UUIDs, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"GPU count must not be negative (got {value})")
        if value == 0:
            # it reads as "no limit" but would hide every GPU: say what omitting it does
            raise ValueError(
                "0 GPUs: omit gpus for a workload without GPUs (it sees none of the host's)"
            )
        return value
    if isinstance(value, list):
        out: list[int | str] = []
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                out.append(item)
            elif isinstance(item, str) and item.strip():
                text = item.strip()
                out.append(int(text) if text.isdigit() else text)
            else:
                raise ValueError(f"GPU list items are indices or UUIDs (got {item!r})")
        if not out:
            raise ValueError("GPU list is empty; omit gpus for a workload without GPUs")
        return tuple(out)
    raise ValueError(f"expected a GPU count or a list of GPU indices/UUIDs (got {value!r})")


def _threads(value: object) -> int | Literal["auto", "off"]:
    if value in ("auto", "off"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f'threads is "auto", "off" or a positive integer (got {value!r})')


def _argv(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(
            f'must be a list of arguments, e.g. ["python", "serve.py"] (got the string {value!r})'
        )
    if not isinstance(value, list) or not value:
        raise ValueError('must be a non-empty list of arguments, e.g. ["python", "serve.py"]')
    if not all(isinstance(a, str) for a in value):
        raise ValueError("every argument must be a string")
    if not value[0]:
        raise ValueError("the program (first argument) is empty")
    if any("\x00" in a for a in value):
        raise ValueError("an argument contains a NUL byte")
    return tuple(value)


def _as_tuple(value: object) -> object:
    # TOML arrays arrive as lists; frozen models keep them as tuples.
    return tuple(value) if isinstance(value, list) else value


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"expected an http:// or https:// URL (got {value!r})")
    return value


def _ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(
            f'expected an IPv4 address such as "127.0.0.1" or "0.0.0.0" (got {value!r})'
        ) from None
    return value


def _host_port(value: object) -> str:
    # a bare port, as a number or as text ("9464"), means the loopback address
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"127.0.0.1:{value}"
    elif isinstance(value, str) and value.strip().isdigit():
        value = f"127.0.0.1:{value.strip()}"
    if not isinstance(value, str):
        raise ValueError(f'expected "host:port" or a port number (got {value!r})')
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port" or a port number (got {value!r})')
    return value


Size = Annotated[int, BeforeValidator(parse_size), Syntax("size")]
Limit = Annotated[int | None, BeforeValidator(_size_or_max), Syntax('size or "max"')]
Duration = Annotated[float, BeforeValidator(parse_duration), Syntax("duration")]
Rate = Annotated[int, BeforeValidator(parse_rate), Syntax("rate")]
CpuList = Annotated[frozenset[int], BeforeValidator(parse_cpu_list), Syntax("CPU list")]
CpuQuota = Annotated[float, BeforeValidator(parse_cpu_quota), Syntax("percent of one CPU")]
Argv = Annotated[tuple[str, ...], BeforeValidator(_argv), Syntax("argv list")]
Url = Annotated[str, AfterValidator(_url), Syntax("URL")]
WorkloadName = Annotated[str, AfterValidator(_check_name("workload"))]
PoolName = Annotated[str, AfterValidator(_check_name("pool"))]


class Section(BaseModel):
    """Base of every profile table: unknown keys are errors, TOML types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class HostNet(Section):
    """The interfaces whose egress nxr shapes, per workload (docs/network.md)."""

    interfaces: Annotated[tuple[str, ...], BeforeValidator(_as_tuple)] = Field(
        (),
        description="Interfaces to shape; each gets nxr's HTB tree as its root qdisc.",
        examples=[["eth0"]],
    )
    link: Rate | None = Field(
        None,
        description="The link's rate, where the interface does not report its speed (virtual "
        "NICs); the HTB tree divides this.",
        examples=["10Gbit"],
    )


class MemoryGuardSettings(Section):
    """Kill a batch or background workload before the kernel's OOM killer has to act
    (docs/memory.md)."""

    enabled: bool = Field(
        True,
        description="Act when available memory and free swap are both under their thresholds.",
    )
    available: float = Field(
        10.0,
        gt=0,
        le=50,
        description="Percent of the machine's memory (MemAvailable of MemTotal) under which "
        "it is about to run out.",
    )
    swap_free: float = Field(
        10.0,
        ge=0,
        le=100,
        description="Percent of swap that must still be free for the guard to wait (without "
        "swap, only available counts).",
    )


class HostSettings(Section):
    """What nxr keeps for the host itself."""

    reserved_cpus: CpuList | None = Field(
        None,
        description="CPUs kept for the system and nxrd; no workload is placed on them. "
        "Default: none on hosts with fewer than 4 CPUs, else CPU 0 and its SMT siblings.",
        examples=["0-1"],
    )
    reserved_memory: Size = Field(
        0,
        description="Memory kept for the system; memory_min guarantees must fit in what is left.",
        examples=["2G"],
    )
    metrics: Annotated[str | None, BeforeValidator(_host_port), Syntax("host:port")] = Field(
        None,
        description="Serve Prometheus metrics at http://ADDRESS/metrics (opt-in; IPv4 or a "
        "host name; a bare port means 127.0.0.1).",
        examples=["127.0.0.1:9464"],
    )
    mps: bool = Field(
        False,
        description="Run an NVIDIA MPS control daemon for each GPU that gpu_shared workloads "
        "share; those workloads then get gpu_compute and a hard gpu_memory limit.",
    )
    net: HostNet = Field(default_factory=HostNet, description="Egress shaping (docs/network.md).")
    memory_guard: MemoryGuardSettings = Field(
        default_factory=MemoryGuardSettings,
        description="Killing batch work before the kernel's OOM killer (docs/memory.md).",
    )


class ControllerSettings(Section):
    """The latency-SLO controller: how fast and how far it acts on the lower classes."""

    enabled: bool = Field(
        True, description="Act for latency-critical workloads that declare an slo."
    )
    period: Duration = Field(0.5, ge=0.1, description="Time between two controller ticks.")
    act_below: float = Field(
        0.10, ge=-1.0, le=1.0, description="Act when (SLO - observed) / SLO falls under this."
    )
    relax_above: float = Field(
        0.30,
        ge=-1.0,
        le=1.0,
        description="Step back once every slack stays above this (above act_below).",
    )
    relax_after: Duration = Field(
        5.0,
        description="How long slack must stay above relax_above before a step down (further "
        "steps need only the cooldown while the requests since the last one were comfortable).",
    )
    cooldown: Duration = Field(2.0, description="Least time between two controller actions.")
    probe_after: Duration = Field(
        15.0,
        ge=0.0,
        description="Try one rung lower after this long above the static values with no "
        "slack under act_below (a try answered by a climb doubles the wait, up to eight times "
        'this). "0s": never; each rung is then held until comfort. Else at least cooldown.',
    )
    max_step: int = Field(1, ge=1, le=10, description="Most rungs climbed in one action.")
    stale_after: Duration = Field(
        5.0, description="Latency older than this is missing: static values return."
    )
    share: bool = Field(
        True,
        description="While every SLO is comfortably met, let batch work also run on the "
        "latency-critical workloads' cores (at its low weight); taken back at the first sign "
        "of risk, and whenever latency is missing.",
    )
    share_below: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share only while each latency-critical workload uses less than this "
        "share of its own cores (over the last 2 s); sharing starts again under four fifths "
        "of it. Sharing costs a busy server more than its queue can absorb. A share of its "
        "cores: for a server that runs one request at a time on N cores, set it under 1/N.",
    )
    judge: bool = Field(
        False,
        description="Judge each climb above the static values by the latency-critical "
        "workloads' CPU time per request (those that push each request's latency and have "
        "cores of their own): when none got 10% cheaper 2 s after the last climb, the rungs "
        "did not remove interference, only batch work's CPU; step back to where the climbs "
        "began and climb no higher for 30 s unless requests get 10% dearer. For CPU-bound "
        "servers whose requests cost about the same each; a GPU server's CPU per request "
        "says little.",
    )


class Control(Section):
    """What the controller may do to this workload (batch, background, interactive)."""

    min_cpu: CpuQuota = Field(0.1, description="Never capped below this CPU quota.")
    freeze: bool = Field(True, description="May be frozen while an SLO is at risk.")
    stop: bool | None = Field(
        None,
        description="May be stopped (and started again later) while an SLO is at risk. "
        "Default: true for background (stopped before batch is frozen), false for batch.",
    )


class Pool(Section):
    """A concurrency pool: workloads in it start only while slots are free."""

    slots: int = Field(ge=1, description="Slots in the pool; each member takes pool_slots.")
    max_starting: int | None = Field(
        None,
        ge=1,
        description="At most this many members starting (not yet ready) at once. "
        "Default: no limit beyond slots.",
    )


class Restart(Section):
    """What happens when a workload's process exits."""

    policy: Literal["no", "on-failure", "always"] = Field(
        "on-failure",
        description='"no": leave it exited; "on-failure": restart after a non-zero exit, '
        'a signal or an OOM kill; "always": restart after any exit. Default: the class\'s '
        "(on-failure for every class).",
    )
    delay: Duration = Field(
        1.0, description="First restart delay; doubles after each failure (100ms at least)."
    )
    max_delay: Duration = Field(60.0, description="Upper bound of the doubling delay.")
    max_restarts: int = Field(
        5, ge=0, description="Give up (state failed) after this many restarts within window."
    )
    window: Duration = Field(
        300.0, ge=1.0, description="Window in which max_restarts is counted (at least 1s)."
    )


class Stop(Section):
    """How a workload is stopped."""

    signal: Annotated[str, BeforeValidator(_signal_name), Syntax("signal name")] = Field(
        "SIGTERM", description="Signal sent first, to the main process."
    )
    timeout: Duration = Field(
        10.0, description="After this, every process left in the cgroup is killed."
    )


class Ready(Section):
    """When a started workload counts as ready (exactly one of http, tcp, exec)."""

    http: Url | None = Field(None, description="Ready when a GET of this URL answers 2xx.")
    tcp: Annotated[str | None, BeforeValidator(_host_port), Syntax("host:port")] = Field(
        None, description="Ready when this address accepts a TCP connection."
    )
    exec: Argv | None = Field(
        None,
        description="Ready when this command exits 0; it runs as the workload (cgroup, `user`,"
        " `group`, `env`, `cwd`).",
    )
    timeout: Duration = Field(
        60.0, description="Not ready after this long counts as a failed start."
    )
    interval: Duration = Field(
        1.0, ge=0.1, description="Time between readiness checks (at least 100ms)."
    )


class Prometheus(Section):
    """Latency from a Prometheus histogram exposed by the serving framework."""

    url: Url = Field(description="The /metrics endpoint to scrape.")
    metric: str | None = Field(
        None,
        min_length=1,
        description="Histogram name (without _bucket), in seconds. Give this or preset.",
    )
    preset: (
        Literal["vllm", "vllm-ttft", "vllm-itl", "tgi", "ray-serve", "triton", "torchserve"] | None
    ) = Field(
        None,
        description="A serving framework's own metric: vllm (end to end), vllm-ttft (time to "
        "first token), vllm-itl (inter-token latency), tgi, ray-serve (histograms); "
        "triton, torchserve (counters only: the windowed mean, not a percentile). "
        "Give this or metric.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Label values that select the series."
    )
    interval: Duration = Field(1.0, ge=0.1, description="Time between scrapes (at least 100ms).")


class Probe(Section):
    """Latency measured by nxr sending a request at an interval."""

    url: Url = Field(description="URL requested by the probe.")
    interval: Duration = Field(1.0, ge=0.1, description="Time between probes (at least 100ms).")


class SloSource(Section):
    """Where observed latency comes from (exactly one)."""

    prometheus: Prometheus | None = Field(None, description="Scrape a histogram.")
    probe: Probe | None = Field(None, description="Time a request sent by nxr.")
    push: bool | None = Field(
        None, description="The workload pushes each request's latency to nxrd."
    )
    front: bool | None = Field(
        None,
        description="Each request's latency as its front logs it: from its arrival at the "
        "front to the answer's last byte, time in the queue included (needs serve).",
    )


class Slo(Section):
    """A latency target kept by the controller (exactly one percentile)."""

    p50: Duration | None = Field(None, gt=0.0, description="Median latency target.")
    p90: Duration | None = Field(None, gt=0.0, description="90th percentile latency target.")
    p95: Duration | None = Field(None, gt=0.0, description="95th percentile latency target.")
    p99: Duration | None = Field(None, gt=0.0, description="99th percentile latency target.")
    window: Duration = Field(
        30.0, gt=0.0, description="Window over which the percentile is computed."
    )
    source: SloSource = Field(description="Where the latency is observed.")

    @property
    def target(self) -> tuple[str, float]:
        """The one percentile set and its target in seconds: ("p99", 0.2)."""
        for name in ("p99", "p95", "p90", "p50"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise ValueError("no percentile set")  # the model's check makes this unreachable


class Net(Section):
    """The workload's network egress on the host's shaped interfaces (docs/network.md)."""

    egress: Rate | None = Field(
        None,
        description="Ceiling: never more than this, even on an idle link.",
        examples=["200Mbit"],
    )
    guarantee: Rate | None = Field(
        None,
        description="Floor: this much whenever it has traffic, however contended the link.",
        examples=["50Mbit"],
    )
    priority: int | None = Field(
        None,
        ge=0,
        le=7,
        description="Who gets spare bandwidth first (0 first; HTB's prio). Default from the "
        "class: latency-critical 0, interactive 1, batch 2, background 3.",
    )


class RightSize(Section):
    """memory.high lowered step by step while the workload's memory pressure stays low, and
    raised again when it rises: the memory it holds but does not use goes back to the
    machine (batch and background; docs/memory.md)."""

    floor: Size = Field(
        description="Never below this: what the workload needs even when idle.",
        examples=["512M"],
    )
    pressure: float = Field(
        0.1,
        gt=0,
        le=100,
        description="Percent of time some task of it stalled on memory (memory.pressure, "
        "over each interval) above which memory.high goes back up; below it, down.",
    )
    interval: Duration = Field(2.0, description="How often memory.high is adjusted.")


class Serve(Section):
    """A front that spreads the workload's requests over its replicas: HAProxy, run by nxrd
    as a workload of its own on the reserved CPUs (docs/front.md)."""

    port: int = Field(ge=1, le=65535, description="Port the front listens on.")
    address: Annotated[str, AfterValidator(_ipv4)] = Field(
        "127.0.0.1",
        description='IPv4 address the front listens on ("0.0.0.0": every interface).',
    )
    inflight: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Requests in flight at each replica at most (HAProxy's server maxconn); "
        "the rest wait in the queue. Default: the replica's cpus, else 1.",
    )
    queue: int | None = Field(
        None,
        ge=1,
        le=1000000,
        description="Requests that may wait for a replica; one more is refused at once with "
        "429 and Retry-After. Default: inflight x replicas.",
    )
    queue_timeout: Duration | None = Field(
        None,
        gt=0.0,
        description="A request that waited this long for a replica is dropped with 503 and "
        "Retry-After, not served late. Default: the slo's target, else 1s.",
    )
    timeout: Duration = Field(
        60.0, gt=0.0, description="Longest a replica may take to answer one request."
    )
    balance: Literal["leastconn", "roundrobin", "first", "random"] = Field(
        "leastconn", description="How a replica is chosen (HAProxy's balance)."
    )
    priority_header: str = Field(
        "X-Priority",
        pattern=r"^[A-Za-z0-9-]+$",
        description='Request header whose value ("high", "normal", "low", or a class name: '
        "latency-critical and interactive are high, batch and background low) orders the "
        "queue: high leaves it first.",
    )
    retry_after: int = Field(
        1, ge=0, le=3600, description="Seconds given in Retry-After when a request is refused."
    )


class Workload(Section):
    """One process tree nxr runs in its own cgroup."""

    command: Argv = Field(description="Program and arguments (no shell).")
    workload_class: WorkloadClass = Field(
        "interactive",
        alias="class",
        description="latency-critical, interactive, batch or background; sets the defaults "
        "for cores, CPU share and memory protection (docs/planning.md).",
    )
    priority: int = Field(
        500,
        ge=0,
        le=1000,
        description="0-1000; higher starts first when a pool has a queue, and within its "
        "class is capped, frozen, stopped or killed for memory last.",
    )
    cpus: int | None = Field(
        None,
        ge=1,
        description="Number of CPUs. Exclusive workloads get whole cores (rounded up on SMT "
        "hosts); shared ones get this many CPUs of the shared pool.",
    )
    cpuset: CpuList | None = Field(None, description="Explicit CPUs, instead of cpus.")
    exclusive: bool | None = Field(
        None,
        description="Own whole cores that no other workload shares. "
        "Default: true for latency-critical, else false.",
    )
    memory_max: Limit = Field(None, description="Hard limit (memory.max); above it, OOM kill.")
    memory_high: Limit = Field(None, description="Throttle-and-reclaim limit (memory.high).")
    memory_min: Size | None = Field(None, description="Guaranteed memory (memory.min).")
    memory_low: Size | None = Field(
        None,
        description="Best-effort protection (memory.low). "
        "Default: memory_max for latency-critical, else none.",
    )
    swap_max: Limit = Field(
        None,
        description="Swap limit (memory.swap.max). Default: 0 for latency-critical (never "
        'swapped), else "max".',
    )
    zswap_max: Limit = Field(
        None,
        description="Most of its memory zswap may keep compressed (memory.zswap.max; Linux "
        "5.19+ built with zswap). Written only when set. With swap_max 0 (latency-critical) "
        "nothing of it goes to zswap either.",
    )
    right_size: RightSize | None = Field(
        None,
        description="Give back memory it holds but does not use: memory.high follows its "
        "memory pressure (batch and background; docs/memory.md).",
    )
    cpu_weight: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="cpu.weight against the other workloads of its class (classes are weighted "
        "by class; see docs/planning.md). Default 100.",
    )
    cpu_max: CpuQuota | None = Field(
        None, description='CPU bandwidth cap (cpu.max), e.g. "150%" = 1.5 CPUs.'
    )
    cpu_idle: bool | None = Field(
        None,
        description="Run at idle scheduling priority (cpu.idle). Default: true for background.",
    )
    pids_max: int | None = Field(
        None, ge=1, le=4194304, description="Process/thread limit (pids.max)."
    )
    io_weight: int | None = Field(None, ge=1, le=10000, description="io.weight (1-10000).")
    gpus: Annotated[
        int | tuple[int | str, ...] | None, BeforeValidator(_gpus), Syntax("count or list")
    ] = Field(
        None,
        description="GPU count (whole GPUs; MIG-enabled ones are left out), or a list of GPU "
        "indices or UUIDs, or one MIG instance's UUID (MIG-...).",
    )
    gpu_shared: bool = Field(
        False, description="Allow the listed GPUs to be given to other gpu_shared workloads too."
    )
    gpu_memory: Size | None = Field(
        None,
        description="GPU memory it needs on each of its GPUs; planning refuses GPUs that "
        "do not have that much (counting gpu_shared neighbours).",
    )
    gpu_compute: Annotated[int, Field(ge=1, le=100)] | None = Field(
        None,
        description="Percent of the GPU's SMs it may use, under MPS ([host] mps, gpu_shared): "
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE.",
    )
    gpu_memory_policy: Literal["warn", "restart", "stop"] | None = Field(
        None,
        description='When it holds more than gpu_memory on a GPU: "warn" (an event; the '
        'default), "restart" or "stop" once it stayed over for 3 s.',
    )
    threads: Annotated[
        int | Literal["auto", "off"], BeforeValidator(_threads), Syntax('"auto", "off" or int')
    ] = Field(
        "auto",
        description='Thread-count variables (OMP_NUM_THREADS...): "auto" sizes them to the '
        'CPUs given, an int sets them, "off" leaves them alone.',
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment; nxr's own variables are added on top."
    )
    user: str | None = Field(None, description="Run as this user (default: nxrd's user).")
    group: str | None = Field(None, description="Run with this group (default: user's group).")
    cwd: str | None = Field(None, description="Working directory (absolute).")
    replicas: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Run this many copies, named NAME.0, NAME.1...: each in its own leaf, with "
        "its own cores, GPUs and port; cpus, gpus and memory are per replica (docs/replicas.md).",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The TCP port it listens on, given to it as NXR_PORT; replica i gets "
        "port + i. The controller reads its accept queue as a leading signal "
        "(docs/controller.md).",
    )
    serve: Serve | None = Field(
        None, description="A request front over its replicas (needs port; docs/front.md)."
    )
    net: Net | None = Field(
        None, description="Egress ceiling and floor on [host.net] interfaces (docs/network.md)."
    )
    after: Annotated[tuple[WorkloadName, ...], BeforeValidator(_as_tuple)] = Field(
        (), description="Start only once these workloads are ready."
    )
    pool: PoolName | None = Field(None, description="Concurrency pool this workload starts in.")
    pool_slots: int | None = Field(None, ge=1, description="Slots taken in the pool (default 1).")
    restart: Restart = Field(default_factory=Restart, description="Restart policy.")
    stop: Stop = Field(default_factory=Stop, description="Stop behaviour.")
    ready: Ready | None = Field(None, description="Readiness check.")
    slo: Slo | None = Field(None, description="Latency target for the controller.")
    control: Control = Field(
        default_factory=Control, description="Limits on what the controller may do to it."
    )

    @model_validator(mode="after")
    def _class_restart(self) -> Workload:
        """A restart policy the profile does not set is its class's (model/classes.py)."""
        if "policy" not in self.restart.model_fields_set:
            policy = CLASSES[self.workload_class].restart
            if policy != self.restart.policy:
                restart = self.restart.model_copy(update={"policy": policy})
                object.__setattr__(self, "restart", restart)  # frozen: set once, here
        return self

    @property
    def is_exclusive(self) -> bool:
        """Whether this workload owns whole cores (explicit, else by class)."""
        if self.exclusive is not None:
            return self.exclusive
        return CLASSES[self.workload_class].exclusive

    @property
    def is_idle(self) -> bool:
        """Whether this workload runs at cpu.idle (explicit, else by class)."""
        if self.cpu_idle is not None:
            return self.cpu_idle
        return CLASSES[self.workload_class].idle and self.cpu_weight is None


class Profile(Section):
    """A host's declaration: host settings, pools and workloads."""

    host: HostSettings = Field(default_factory=HostSettings, description="Host settings.")
    controller: ControllerSettings = Field(
        default_factory=ControllerSettings, description="The latency-SLO controller."
    )
    pools: dict[PoolName, Pool] = Field(default_factory=dict, description="Concurrency pools.")
    workloads: dict[WorkloadName, Workload] = Field(
        default_factory=dict, description="Workloads, by name."
    )
