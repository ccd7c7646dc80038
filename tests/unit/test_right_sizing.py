"""Right-sizing: memory.high follows the workload's memory pressure, down while it stays
low, back up when it rises, within the profile's floor and limits; given back on release."""

from __future__ import annotations

import pytest

from nxrd.controller.memory_law import next_high
from nxrd.controller.right_sizing import RightSizing
from nxrd.errors import ProfileError
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import FakeCgroupFS
from nxrd.kernel.fake_runtime import FakeRuntime
from nxrd.ledger import Ledger
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES

MiB = 1 << 20


def test_low_pressure_lowers_it_from_what_is_used_and_high_pressure_raises_it() -> None:
    # no pressure: 5% under what it uses; half the threshold: 2.5% under
    assert next_high(None, 1000 * MiB, 0.0, 0.001, 100 * MiB, None) == 950 * MiB
    assert next_high(None, 1000 * MiB, 0.0005, 0.001, 100 * MiB, None) == 975 * MiB
    # held at 800M while using 900M (the kernel overshoots briefly): from the lower
    assert next_high(800 * MiB, 900 * MiB, 0.0, 0.001, 100 * MiB, None) == 760 * MiB
    # over the threshold: 10% over the larger of the limit and the use
    assert next_high(500 * MiB, 480 * MiB, 0.01, 0.001, 100 * MiB, None) == 550 * MiB
    # nothing lowered yet and already under pressure: not its doing, the plan stands
    assert next_high(None, 480 * MiB, 0.01, 0.001, 100 * MiB, None) is None
    # never under the floor, never over the profile's own limit
    assert next_high(110 * MiB, 110 * MiB, 0.0, 0.001, 108 * MiB, None) == 108 * MiB
    assert next_high(950 * MiB, 990 * MiB, 0.5, 0.001, 100 * MiB, 1000 * MiB) == 1000 * MiB


def test_from_twice_the_working_set_to_within_a_fifth_of_it_in_a_minute() -> None:
    """The law alone, on a workload whose cold half is reclaimed at no cost and whose
    working set stalls it the moment memory.high goes under it."""
    working, current, high, steps = 400 * MiB, 800 * MiB, None, 0
    while steps < 30:  # 30 intervals of 2 s
        pressure = 0.05 if high is not None and high < working else 0.0
        high = next_high(high, current, pressure, 0.001, 64 * MiB, None)
        assert high is not None
        current = max(working, min(current, high))
        steps += 1
    assert current <= working * 1.2 and high >= working * 0.9


PROFILE = """
[workloads.embed]
command = ["embed"]
class = "batch"
memory_max = "2G"
right_size = {floor = "100M", pressure = 0.1, interval = "2s"}
"""


def setup(text: str = PROFILE):  # type: ignore[no-untyped-def]
    profile = parse_profile(text)
    plan = make_plan(profile, load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    rt = FakeRuntime()
    sup = Supervisor(profile, plan, rt, EventLog(), lambda: 0.0)
    sup.tick(0.0)
    ledger = Ledger(lambda: 0.0)
    fs.on_write = ledger.record
    return RightSizing(sup, fs, ledger, lambda: 0.0), fs, sup, rt, ledger


def read_by(fs: FakeCgroupFS, stalled_us: int, current: int) -> None:
    fs.dirs["batch/embed"]["memory.pressure"] = (
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={stalled_us}\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0"
    )
    fs.dirs["batch/embed"]["memory.current"] = str(current)


def test_right_sizing_writes_memory_high_with_its_reason_and_gives_it_back() -> None:
    sizing, fs, sup, _rt, ledger = setup()
    read_by(fs, 0, 1000 * MiB)
    sizing.step(0.0)  # the first reading: nothing to compare with yet
    assert fs.read("batch/embed", "memory.high") == "max" and sizing.high("embed") is None
    sizing.step(1.0)  # before the interval: nothing read
    read_by(fs, 200, 1000 * MiB)  # 0.2 ms stalled in 2 s: 0.01%
    sizing.step(2.0)
    assert fs.read("batch/embed", "memory.high") == str(
        next_high(None, 1000 * MiB, 1e-4, 1e-3, 0, None)
    )
    assert ledger.of("batch/embed")["memory.high"].by == (
        "right-size: memory pressure 0.01% under 0.10%, using 1000M"
    )
    read_by(fs, 200 + 20_000, 900 * MiB)  # 20 ms in 2 s: 1%, over
    sizing.step(4.0)
    assert int(fs.read("batch/embed", "memory.high")) > 900 * MiB
    assert "over 0.10%" in ledger.of("batch/embed")["memory.high"].by
    # a new process starts from the plan: nothing carried over
    rec = sup.records["embed"]
    rec.pid = (rec.pid or 0) + 100
    sizing.step(6.0)
    assert sizing.high("embed") is None
    read_by(fs, 20_200, 900 * MiB)
    sizing.step(8.0)
    sizing.release("nxrd exiting")
    assert fs.read("batch/embed", "memory.high") == "max"
    assert ledger.of("batch/embed")["memory.high"].by == "right-size: nxrd exiting"


def test_a_frozen_workload_is_not_sized() -> None:
    sizing, fs, sup, _rt, _ = setup()
    read_by(fs, 0, 1000 * MiB)
    sizing.step(0.0)
    sup.freeze("embed", 0.0)
    sizing.step(2.0)
    assert fs.read("batch/embed", "memory.high") == "max"


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ('class = "latency-critical"\ncpus = 1', "right_size", "only batch and background"),
        ('class = "batch"\nmemory_max = "64M"', "right_size.floor", "above its memory limit"),
    ],
)
def test_right_size_where_it_cannot_act_is_a_one_line_error(
    line: str, field: str, says: str
) -> None:
    text = f'[workloads.w]\ncommand = ["x"]\n{line}\nright_size = {{floor = "100M"}}\n'
    with pytest.raises(ProfileError) as e:
        make_plan(parse_profile(text), load_topology(TOPOLOGIES / "smt16-1gpu.json"))
    assert any(f"workloads.w.{field}" in line and says in line for line in e.value.lines())
