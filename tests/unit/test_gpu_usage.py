"""GPU accounting against a fake NVML: the guard, the reader, attribution, status and metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from nxrd.api.metrics import families, gpu_families
from nxrd.cli.format import show_text, status_table
from nxrd.kernel.gpu_usage import (
    GpuAccounting,
    GpuReading,
    ProcessUse,
    UsageReader,
    Use,
    attribute,
    workload_doc,
)
from nxrd.kernel.nvml_guard import Guard, NotAnswering
from nxrd.model.topology import Gpu
from tests.unit.fake_nvml import FakeGpu, FakeNVML

GIB = 1 << 30


def topo_gpus(nvml: FakeNVML) -> list[Gpu]:
    return [Gpu(index=i, uuid=g.uuid) for i, g in enumerate(nvml.gpus)]


def busy_host() -> FakeNVML:
    """GPU 0: chat (pids 10, 11) and a stray pid 99; GPU 1: embed; GPU 2: MIG, unsampled."""
    return FakeNVML(
        [
            FakeGpu(
                "GPU-0",
                "00000000:41:00.0",
                compute=[(10, 20 * GIB), (11, None), (99, 3 * GIB)],
                graphics=[(10, 20 * GIB)],  # also a graphics context: counted once
                samples=[(10, 100, 60), (10, 200, 80), (11, 150, 5), (99, 150, 10)],
                utilization=97,
            ),
            FakeGpu(
                "GPU-1",
                "00000000:42:00.0",
                compute=[(20, 8 * GIB)],
                samples=[],  # nothing ran a kernel: NotFound
                utilization=0,
            ),
            FakeGpu(
                "GPU-2",
                "00000000:C1:00.0",
                mig=(1, 1),
                compute=[(30, None)],  # MIG: no per-process memory without privileges
                utilization=40,
                unsupported={"nvmlDeviceGetProcessUtilization"},
            ),
        ]
    )


OWNERS = {10: "chat", 11: "chat", 20: "embed", 30: "embed", 99: None}


@pytest.fixture
def released() -> Iterator[list[FakeNVML]]:
    """Fakes whose hung calls are let go at the end, so no test leaves a thread behind."""
    fakes: list[FakeNVML] = []
    yield fakes
    for f in fakes:
        f.release.set()


# -- the guard ---------------------------------------------------------------------------


def test_guard_returns_values_and_raises_the_calls_errors() -> None:
    guard = Guard(timeout=1.0)
    assert guard.call("add", lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        guard.call("div", lambda: 1 / 0)
    assert guard.stuck() == []


def test_a_hung_call_is_given_up_and_not_called_again_until_it_returns(
    released: list[FakeNVML],
) -> None:
    nvml = FakeNVML()
    released.append(nvml)
    nvml.hang.add("nvmlDeviceGetUUID")
    guard = Guard(timeout=0.2)
    before = threading.active_count()

    started = time.monotonic()
    with pytest.raises(NotAnswering, match=r"GPU not answering: uuid did not return within 0\.2 s"):
        guard.call("uuid", nvml.nvmlDeviceGetUUID, 0)
    assert time.monotonic() - started < 1.0
    assert guard.stuck() == ["uuid"] and threading.active_count() == before + 1

    # While it hangs: refused at once, no second thread, the driver not called again.
    started = time.monotonic()
    with pytest.raises(NotAnswering, match="uuid has not returned for"):
        guard.call("uuid", nvml.nvmlDeviceGetUUID, 0)
    assert time.monotonic() - started < 0.1
    assert threading.active_count() == before + 1
    assert [c for c in nvml.calls if c[0] == "nvmlDeviceGetUUID"] == [("nvmlDeviceGetUUID", 0)]

    nvml.hang.clear()
    nvml.release.set()
    deadline = time.monotonic() + 5
    while guard.stuck() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.stuck() == []
    assert guard.call("uuid", nvml.nvmlDeviceGetUUID, 1) == "GPU-1"
    assert threading.active_count() == before  # a call that returns leaves no thread


def test_calls_made_together_are_waited_for_together_and_a_hang_costs_the_others_nothing(
    released: list[FakeNVML],
) -> None:
    nvml = FakeNVML()
    released.append(nvml)
    nvml.hang |= {"nvmlDeviceGetUUID:0", "nvmlDeviceGetName:0"}  # GPU 0 hangs, twice
    guard = Guard(timeout=0.2)
    started = time.monotonic()
    got = guard.call_each(
        [
            ("uuid 0", lambda: nvml.nvmlDeviceGetUUID(0)),
            ("name 0", lambda: nvml.nvmlDeviceGetName(0)),
            ("uuid 1", lambda: nvml.nvmlDeviceGetUUID(1)),
            ("fails", lambda: 1 / 0),
        ]
    )
    assert time.monotonic() - started < 0.4  # one timeout for the two hangs, not one each
    assert [type(g).__name__ for g in got] == [
        "NotAnswering",
        "NotAnswering",
        "str",
        "ZeroDivisionError",
    ]
    assert str(got[0]) == "GPU not answering: uuid 0 did not return within 0.2 s"
    assert got[2] == "GPU-1"
    assert guard.stuck() == ["name 0", "uuid 0"]
    again = guard.call_each([("uuid 0", lambda: nvml.nvmlDeviceGetUUID(0))])
    assert str(again[0]).startswith("GPU not answering: uuid 0 has not returned for ")


# -- the reader --------------------------------------------------------------------------


def test_reader_processes_memory_and_utilization() -> None:
    nvml = busy_host()
    reader = UsageReader(topo_gpus(nvml), Guard(), nvml)
    r0, r1, r2 = reader.read()
    assert r0 == GpuReading(
        0,
        "GPU-0",
        (
            ProcessUse(10, 20 * GIB, 70.0),  # mean of its two samples
            ProcessUse(11, None, 5.0),
            ProcessUse(99, 3 * GIB, 10.0),
        ),
        utilization=97.0,
        per_process=True,
    )
    assert r1 == GpuReading(
        1, "GPU-1", (ProcessUse(20, 8 * GIB, 0.0),), utilization=0.0, per_process=True
    )
    assert r2 == GpuReading(2, "GPU-2", (ProcessUse(30, None, None),), utilization=40.0)


def test_reader_keeps_one_session_and_the_last_sample_time() -> None:
    nvml = busy_host()
    reader = UsageReader(topo_gpus(nvml), Guard(), nvml)
    reader.read()
    nvml.gpus[0].samples.append((10, 300, 20))
    second = reader.read()[0]
    assert second.processes[0] == ProcessUse(10, 20 * GIB, 20.0)  # only the new sample
    assert second.processes[1] == ProcessUse(11, None, 0.0)  # no new sample: idle
    reader.read()
    assert nvml.inits == 1 and not nvml.shutdown
    assert nvml.timestamps == [0, 0, 200, 0, 300, 0]  # GPU 0 then GPU 1, per poll
    # GPU 2 said NotSupported once and is not asked again
    asked = [h for name, h in nvml.calls if name == "nvmlDeviceGetProcessUtilization"]
    assert asked.count(2) == 1


def test_a_lost_gpu_does_not_hide_the_others() -> None:
    nvml = busy_host()
    nvml.gpus[1].lost = True
    readings = UsageReader(topo_gpus(nvml), Guard(), nvml).read()
    assert [r.error for r in readings] == [None, "NVML: GPU is lost", None]


# -- attribution (pure) ------------------------------------------------------------------


def test_attribution_sums_per_workload_per_gpu() -> None:
    readings = UsageReader(topo_gpus(busy_host()), Guard(), busy_host()).read()
    seen = attribute(readings, OWNERS)
    assert seen.workloads == {
        "chat": {0: Use(20 * GIB, 75.0, (10, 11))},  # pid 11's memory unknown: not guessed
        "embed": {
            1: Use(8 * GIB, 0.0, (20,)),
            2: Use(None, 40.0, (30,)),  # unsampled, but alone on the GPU: the GPU's figure
        },
    }
    assert seen.other == {0: Use(3 * GIB, 10.0, (99,))}


def test_unsampled_shared_gpu_has_no_utilization_per_workload() -> None:
    r = GpuReading(
        0, "GPU-0", (ProcessUse(1, GIB, None), ProcessUse(2, 2 * GIB, None)), utilization=90.0
    )
    seen = attribute([r], {1: "a", 2: "b"})
    assert seen.workloads == {"a": {0: Use(GIB, None, (1,))}, "b": {0: Use(2 * GIB, None, (2,))}}


def test_workload_doc_lists_its_gpus_even_unused() -> None:
    nvml = busy_host()
    seen = attribute(UsageReader(topo_gpus(nvml), Guard(), nvml).read(), OWNERS)
    doc = workload_doc(seen, None, "chat", [0, 1], running=True)
    assert doc["gpu_memory_bytes"] == 20 * GIB
    assert doc["gpu_utilization_percent"] == 37.5  # (75 + 0) / its 2 GPUs
    assert [(u["gpu"], u["memory_bytes"], u["utilization_percent"]) for u in doc["gpu_usage"]] == [
        (0, 20 * GIB, 75.0),
        (1, 0, 0.0),
    ]
    assert workload_doc(seen, None, "chat", [0, 1], running=False)["gpu_memory_bytes"] == 20 * GIB
    assert workload_doc(seen, None, "idle", [1], running=False) == {}
    assert workload_doc(None, None, "chat", [0], running=True) == {}  # no NVML: nothing


# -- the daemon's view: accounting, status, show, metrics --------------------------------


def test_accounting_through_a_hang(released: list[FakeNVML]) -> None:
    nvml = busy_host()
    released.append(nvml)
    acct = GpuAccounting(topo_gpus(nvml), Guard(timeout=0.2), nvml)
    acct.poll(OWNERS.get)
    assert acct.workload("chat", [0], True)["gpu_memory_bytes"] == 20 * GIB
    assert [
        (g["index"], g["utilization_percent"], g["other_memory_bytes"]) for g in acct.host()
    ] == [
        (0, 97.0, 3 * GIB),
        (1, 0.0, 0),
        (2, 40.0, 0),
    ]

    nvml.hang.add("nvmlDeviceGetComputeRunningProcesses:0")  # GPU 0's driver call hangs
    started = time.monotonic()
    acct.poll(OWNERS.get)
    acct.poll(OWNERS.get)  # refused at once while the first hangs
    assert time.monotonic() - started < 1.0
    # GPU 0 says why it has no figures; none of its old ones are kept.
    doc = acct.workload("chat", [0], True)
    assert doc["gpu_memory_bytes"] is None and doc["gpu_utilization_percent"] is None
    assert doc["gpu_usage"][0]["error"].startswith(
        "GPU not answering: the query of GPU 0 has not returned for "
    )
    assert acct.error is None  # NVML itself answers
    # The other GPUs are read as before.
    embed = acct.workload("embed", [1], True)
    assert embed["gpu_memory_bytes"] == 8 * GIB and embed["gpu_usage"][0]["uuid"] == "GPU-1"
    assert [
        (g["index"], g["utilization_percent"], g["other_memory_bytes"]) for g in acct.host()
    ] == [
        (0, None, None),
        (1, 0.0, 0),
        (2, 40.0, 0),
    ]
    assert [s.labels["gpu"] for s in gpu_families(acct.host())[0].samples] == ["1", "2"]
    # each GPU asked in each poll, but GPU 0 not again while its call still hangs
    asked = Counter(h for n, h in nvml.calls if n == "nvmlDeviceGetComputeRunningProcesses")
    assert asked == {0: 2, 1: 3, 2: 3}

    nvml.hang.clear()
    nvml.release.set()
    deadline = time.monotonic() + 5
    while acct.reader.guard.stuck() and time.monotonic() < deadline:
        time.sleep(0.01)
    acct.poll(OWNERS.get)
    assert acct.workload("chat", [0], True)["gpu_memory_bytes"] == 20 * GIB


def test_each_gpu_has_its_own_xid_events_and_a_gpu_that_cannot_register_frees_its_set() -> None:
    nvml = busy_host()
    nvml.gpus[1].unsupported.add("nvmlDeviceRegisterEvents")
    reader = UsageReader(topo_gpus(nvml), Guard(), nvml)
    reader.read()
    assert ("nvmlEventSetFree", []) in nvml.calls  # GPU 1's, never registered
    nvml.gpus[0].xids.append(48)
    nvml.gpus[2].xids += [79, 13]
    assert [r.xids for r in reader.read()] == [(48,), (), (79, 13)]
    assert [r.xids for r in reader.read()] == [(), (), ()]  # each read once


def test_init_failure_is_reported_and_retried() -> None:
    nvml = busy_host()
    nvml.fail_init = True
    acct = GpuAccounting(topo_gpus(nvml), Guard(), nvml)
    acct.poll(OWNERS.get)
    assert acct.error == "NVML unavailable: Driver Not Loaded"
    nvml.fail_init = False
    acct.poll(OWNERS.get)
    assert acct.error is None and nvml.inits == 1


def row(name: str, gpus: list[int], **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "class": "batch",
        "state": "ready",
        "pid": 1,
        "cpus": "0",
        "memory_max": None,
        "gpus": gpus,
        "restarts": 0,
        "reason": "",
        **extra,
    }


def test_status_has_a_gpu_usage_column_only_on_gpu_hosts() -> None:
    assert "GPU MEM/UTIL%" not in status_table([row("a", [])])
    text = status_table(
        [
            row("chat", [0], gpu_memory_bytes=20 * GIB, gpu_utilization_percent=75.0),
            row("lost", [1], gpu_error="GPU not answering: ..."),
            row("cpu", []),
        ]
    )
    head, chat, lost, cpu = (line.split() for line in text.splitlines())
    at = head.index("MEM/UTIL%") - 1  # the header is two words
    assert head[at : at + 2] == ["GPU", "MEM/UTIL%"]
    gpus_col = head.index("GPUS") - 1  # PRESSURE CPU/MEM is two words too
    assert chat[gpus_col : gpus_col + 2] == ["0", "20G/75"]
    assert lost[gpus_col : gpus_col + 3] == ["1", "no", "answer"]
    assert cpu[gpus_col : gpus_col + 2] == ["-", "-"]


def test_status_says_which_gpus_are_quarantined_or_not_answering() -> None:
    gpus = [
        {"index": 0, "uuid": "GPU-a", "error": None, "quarantined": None},
        {"index": 1, "uuid": "GPU-b", "error": None, "quarantined": "Xid 79"},
        {"index": 2, "uuid": "GPU-c", "error": "GPU not answering: x", "quarantined": None},
    ]
    lines = status_table([row("chat", [0])], gpus).splitlines()
    assert lines[2:] == [
        "GPU 1 (GPU-b): quarantined: Xid 79",
        "GPU 2 (GPU-c): GPU not answering: x",
    ]


def test_show_lists_each_gpu() -> None:
    w = row(
        "chat",
        [0, 1],
        cgroup="batch/chat",
        gpu_usage=[
            {"gpu": 0, "memory_bytes": 20 * GIB, "utilization_percent": 75.0, "pids": [10, 11]},
            {"gpu": 1, "memory_bytes": None, "utilization_percent": None, "pids": []},
        ],
    )
    lines = show_text(w).splitlines()
    assert "  gpu 0: memory 20G, utilization 75%, pids 10,11" in lines
    assert "  gpu 1: memory unknown, utilization unknown, pids none" in lines


def test_metrics_per_workload_and_gpu() -> None:
    doc = row(
        "chat",
        [0, 1],
        gpu_usage=[
            {"gpu": 0, "uuid": "GPU-0", "memory_bytes": 20 * GIB, "utilization_percent": 75.0},
            {"gpu": 1, "uuid": "GPU-1", "memory_bytes": None, "utilization_percent": 0.0},
        ],
    )
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in families([doc])
        for s in fam.samples
        if s.name.startswith("nxr_workload_gpu_")
    }
    who = (("class", "batch"), ("workload", "chat"))

    def on(gpu: int) -> tuple[tuple[str, str], ...]:
        return (*who[:1], ("gpu", str(gpu)), ("uuid", f"GPU-{gpu}"), *who[1:])

    assert got == {
        ("nxr_workload_gpu_memory_bytes", on(0)): 20.0 * GIB,
        ("nxr_workload_gpu_utilization_ratio", on(0)): 0.75,
        ("nxr_workload_gpu_utilization_ratio", on(1)): 0.0,
    }
    host = gpu_families(
        [
            {"index": 0, "uuid": "GPU-0", "utilization_percent": 97.0, "other_memory_bytes": GIB},
            {"index": 1, "uuid": "GPU-1", "utilization_percent": None, "quarantined": "Xid 79"},
        ]
    )
    g0, g1 = {"gpu": "0", "uuid": "GPU-0"}, {"gpu": "1", "uuid": "GPU-1"}
    assert [(s.name, s.labels, s.value) for fam in host for s in fam.samples] == [
        ("nxr_gpu_utilization_ratio", g0, 0.97),
        ("nxr_gpu_other_memory_bytes", g0, float(GIB)),
        ("nxr_gpu_quarantined", g0, 0.0),
        ("nxr_gpu_quarantined", g1, 1.0),
    ]
