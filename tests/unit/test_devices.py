"""The /dev/nvidia* device filter: its program run through a small eBPF interpreter, the
bpf(2) calls it makes (against a fake syscall), and where the runtime attaches it."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nxrd.errors import KernelError
from nxrd.kernel import devices
from nxrd.kernel.apply import apply_plan
from nxrd.kernel.cgroupfs import DEVICE_FILTER, FakeCgroupFS
from nxrd.kernel.devices import device_filter
from nxrd.kernel.linux_runtime import LinuxRuntime
from nxrd.model.topology import load_topology
from nxrd.plan import make_plan
from nxrd.profile import parse_profile
from nxrd.supervisor.events import EventLog
from nxrd.supervisor.supervisor import Supervisor
from tests.unit.conftest import TOPOLOGIES

BLOCK, CHAR = 1, 2
MKNOD, READ, WRITE = 1, 2, 4


def run(prog: bytes, dev_type: int, major: int, minor: int, access: int = READ | WRITE) -> int:
    """Evaluate a cgroup device program the way the kernel would, for the opcodes it may use."""
    assert len(prog) % 8 == 0
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    reg: list[int | None] = [None] * 11
    pc = 0
    while True:
        code, regs, off, imm = insns[pc]
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if code == 0x61:  # ldxw dst, [src + off]: only from the context, in r1
            assert src == 1 and off in (0, 4, 8), (src, off)
            reg[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:  # and32 dst, imm
            value = reg[dst]
            assert value is not None
            reg[dst] = value & imm & 0xFFFFFFFF
        elif code == 0xB7:  # mov64 dst, imm
            reg[dst] = imm
        elif code in (0x15, 0x55):  # jeq / jne dst, imm, +off
            assert off >= 0, "backward jump"  # forward only: it always terminates
            assert reg[dst] is not None, f"r{dst} read before it is set"
            if (reg[dst] == imm) == (code == 0x15):
                pc += off
        elif code == 0x95:  # exit
            assert reg[0] in (0, 1)
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc - 1}")
        assert 0 <= pc < len(insns), "jumped out of the program"


NODES = {
    "nvidia0": (CHAR, 195, 0),
    "nvidia1": (CHAR, 195, 1),
    "nvidia2": (CHAR, 195, 2),
    "nvidia3": (CHAR, 195, 3),
    "nvidiactl": (CHAR, 195, 255),
    "nvidia-modeset": (CHAR, 195, 254),
    "sda (block 8:0)": (BLOCK, 8, 0),
    "block 195:1": (BLOCK, 195, 1),
    "null (1:3)": (CHAR, 1, 3),
    "nvidia-uvm (510:0)": (CHAR, 510, 0),
}


@pytest.mark.parametrize(
    ("allowed", "denied"),
    [
        ([0], {"nvidia1", "nvidia2", "nvidia3"}),
        ([1, 3], {"nvidia0", "nvidia2"}),
        ([], {"nvidia0", "nvidia1", "nvidia2", "nvidia3"}),  # a workload given no GPU
        ([0, 1, 2, 3], set()),
    ],
)
def test_only_the_given_gpus_are_allowed(allowed: list[int], denied: set[str]) -> None:
    prog = device_filter(allowed)
    for name, node in NODES.items():
        for access in (MKNOD, READ, WRITE, READ | WRITE):
            assert run(prog, *node, access=access) == (name not in denied), (name, access)


@given(
    allowed=st.sets(st.integers(0, 300), max_size=8),
    dev_type=st.sampled_from([BLOCK, CHAR]),
    major=st.sampled_from([0, 1, 8, 194, 195, 196, 510]),
    minor=st.integers(0, 300),
    access=st.integers(1, 7),
)
def test_program_matches_the_policy(
    allowed: set[int], dev_type: int, major: int, minor: int, access: int
) -> None:
    nvidia = dev_type == CHAR and major == 195
    expected = not nvidia or minor in allowed or minor in (254, 255)
    assert run(device_filter(allowed), dev_type, major, minor, access) == expected


def test_program_shape() -> None:
    prog = device_filter([2, 0, 2])
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    # 4 loads, 2 guards, one compare per minor (0, 2, 254, 255: repeats once), 2 returns.
    assert len(insns) == 4 + 2 + 4 + 4
    assert insns[-1][0] == insns[-3][0] == 0x95
    assert [i[3] for i in insns if i[0] == 0x15] == [0, 2, 254, 255]


def test_a_minor_out_of_range_is_refused() -> None:
    with pytest.raises(KernelError, match="-1 is not a device minor number"):
        device_filter([-1])


class FakeBpf:
    """bpf(2) as the kernel answers it, recording each call; fds are real (of /dev/null)."""

    def __init__(self, attached: tuple[int, ...] = (), fail: dict[int, int] | None = None):
        self.attached, self.fail = attached, fail or {}
        self.calls: list[tuple[int, bytes]] = []
        self.log = b""  # what the verifier writes when it refuses
        self.program = self.license = b""

    def __call__(self, cmd: int, attr: bytes | ctypes.Array[ctypes.c_char]) -> int:
        raw = bytes(attr)
        self.calls.append((cmd, raw))
        if cmd == 5:  # the buffers it points to live only during the call: read them now
            _, count, insns, license_ = struct.unpack_from("<IIQQ", raw)
            self.program = ctypes.string_at(insns, count * 8)
            self.license = ctypes.string_at(license_)
        if cmd == 5 and self.log:
            log_size, log_buf = struct.unpack_from("<IQ", raw, 28)
            ctypes.memmove(log_buf, self.log + b"\0", min(len(self.log) + 1, log_size))
        if cmd in self.fail:
            raise OSError(self.fail[cmd], os.strerror(self.fail[cmd]))
        if cmd == 16:  # PROG_QUERY: ids written where prog_ids points, prog_cnt back in attr
            assert isinstance(attr, ctypes.Array)
            ids = struct.pack(f"<{len(self.attached)}I", *self.attached)
            ctypes.memmove(struct.unpack_from("<Q", raw, 16)[0], ids, len(ids))
            struct.pack_into("<I", attr, 24, len(self.attached))
        return os.open(os.devnull, os.O_RDONLY) if cmd in (5, 13) else 0

    def cmds(self) -> list[int]:
        return [c for c, _ in self.calls]


@pytest.fixture
def bpf(monkeypatch: pytest.MonkeyPatch) -> FakeBpf:
    fake = FakeBpf(attached=(7, 9))
    monkeypatch.setattr(devices, "_bpf", fake)
    return fake


def test_load_attach_then_replace_what_was_there(bpf: FakeBpf, tmp_path: Path) -> None:
    devices.restrict_gpus(tmp_path, [1])
    # load, list the old ones, attach the new, then detach each old one by id
    assert bpf.cmds() == [5, 16, 8, 13, 9, 13, 9]
    load = bpf.calls[0][1]
    assert struct.unpack_from("<I", load)[0] == 15  # BPF_PROG_TYPE_CGROUP_DEVICE
    assert bpf.program == device_filter([1])
    assert bpf.license == b"GPL"
    assert load[48:60] == b"nxr_devices\0"
    attach = struct.unpack_from("<IIII", bpf.calls[2][1])
    assert attach[2:] == (6, 2)  # BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI
    assert [struct.unpack_from("<I", raw)[0] for c, raw in bpf.calls if c == 13] == [7, 9]


def test_a_failed_attach_leaves_the_old_filter(bpf: FakeBpf, tmp_path: Path) -> None:
    bpf.fail[8] = errno.EPERM
    with pytest.raises(KernelError) as e:
        devices.restrict_gpus(tmp_path, [0])
    assert str(e.value) == (
        f"cgroup device filter for {tmp_path}: attaching not permitted (needs CAP_SYS_ADMIN, "
        "and no ancestor cgroup may hold a device program attached without BPF_F_ALLOW_MULTI)"
    )
    assert 9 not in bpf.cmds()


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (
            errno.EPERM,
            "cgroup device filter: bpf() not permitted (needs CAP_SYS_ADMIN: run nxrd as root)",
        ),
        (
            errno.ENOSYS,
            "cgroup device filter: this kernel has no bpf() system call (needs CONFIG_BPF_SYSCALL)",
        ),
        (
            errno.EINVAL,
            "cgroup device filter: this kernel has no cgroup device programs (needs CONFIG_CGROUP_BPF)",
        ),
    ],
)
def test_load_failures_name_the_missing_piece(
    bpf: FakeBpf, tmp_path: Path, err: int, message: str
) -> None:
    bpf.fail[5] = err
    with pytest.raises(KernelError) as e:
        devices.restrict_gpus(tmp_path, [0])
    assert str(e.value) == message
    assert devices.support() == message
    assert bpf.cmds() == [5, 5]  # nothing attached


def test_a_verifier_refusal_shows_its_last_line(bpf: FakeBpf, tmp_path: Path) -> None:
    bpf.fail[5] = errno.EACCES
    bpf.log = (
        b"func#0 @0\n0: R1=ctx(off=0,imm=0) R10=fp0\n0: (95) exit\nR0 !read_ok\n"
        b"processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 "
        b"peak_states 0 mark_read 0\n"
    )
    with pytest.raises(KernelError) as e:
        devices.restrict_gpus(tmp_path, [0])
    assert str(e.value) == "cgroup device filter: the verifier refused it: R0 !read_ok"
    assert "\n" not in str(e.value)


def test_support_is_none_when_the_program_loads(bpf: FakeBpf) -> None:
    assert devices.support() is None
    assert bpf.cmds() == [5]


PROFILE = """
[workloads.model]
command = ["x"]
class = "latency-critical"
cpus = 2
gpus = 2
[workloads.batch]
command = ["x"]
class = "batch"
"""


def _runtime(
    topology: str, tmp_path: Path, minor_offset: int | None = None
) -> tuple[LinuxRuntime, FakeCgroupFS, Supervisor]:
    topo = load_topology(TOPOLOGIES / topology)
    if minor_offset is not None:  # NVML said which /dev/nvidiaN each GPU is
        gpus = [g.model_copy(update={"minor": g.index + minor_offset}) for g in topo.gpus]
        topo = topo.model_copy(update={"gpus": gpus})
    profile = parse_profile(PROFILE)
    plan = make_plan(profile, topo)
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    rt = LinuxRuntime(fs, tmp_path, gpus=topo.gpus)
    return rt, fs, Supervisor(profile, plan, rt, EventLog(), lambda: 1000.0)


def test_every_leaf_of_a_gpu_host_is_filtered(tmp_path: Path) -> None:
    rt, fs, sup = _runtime("2socket-8gpu.json", tmp_path)
    model, batch = sup.records["model"].plan, sup.records["batch"].plan
    rt.ensure_cgroup(model)
    rt.ensure_cgroup(batch)
    assert fs.gpu_filters == {model.cgroup: [g.index for g in model.gpus], batch.cgroup: []}
    assert len(model.gpus) == 2


def test_the_minor_is_nvmls_when_it_is_known(tmp_path: Path) -> None:
    rt, fs, sup = _runtime("2socket-8gpu.json", tmp_path, minor_offset=10)
    model = sup.records["model"].plan
    rt.ensure_cgroup(model)
    assert fs.gpu_filters == {model.cgroup: [g.index + 10 for g in model.gpus]}


def test_a_mig_instance_opens_its_gpus_device_file(tmp_path: Path) -> None:
    topo = load_topology(TOPOLOGIES / "2socket-8gpu.json")
    gpus = [g.model_dump() for g in topo.gpus]
    gpus[3].update(mig=True, minor=7, mig_instances=[{"index": 0, "uuid": "MIG-x"}])
    topo = topo.model_validate({**topo.model_dump(), "gpus": gpus})
    plan = make_plan(parse_profile('[workloads.small]\ncommand = ["x"]\ngpus = ["MIG-x"]\n'), topo)
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    rt = LinuxRuntime(fs, tmp_path, gpus=topo.gpus)
    rt.ensure_cgroup(plan.workload("small"))
    assert fs.gpu_filters == {plan.workload("small").cgroup: [7]}  # GPU 3 is /dev/nvidia7


def test_a_host_without_gpus_gets_no_filter(tmp_path: Path) -> None:
    profile = PROFILE.replace("gpus = 2\n", "").replace("cpus = 2\n", "cpus = 1\n")
    topo = load_topology(TOPOLOGIES / "vm-2cpu.json")
    plan = make_plan(parse_profile(profile), topo)
    fs = FakeCgroupFS()
    apply_plan(plan, fs)
    rt = LinuxRuntime(fs, tmp_path, gpus=topo.gpus)
    for wl in plan.workloads:
        rt.ensure_cgroup(wl)
    assert fs.gpu_filters == {}


def test_no_filter_no_start_and_one_line_saying_why(tmp_path: Path) -> None:
    _, fs, sup = _runtime("2socket-8gpu.json", tmp_path)
    leaf = sup.records["model"].plan.cgroup
    fs.fail_on.add((leaf, DEVICE_FILTER))
    sup.tick(1000.0)
    exited = next(e for e in sup.events.since(0, "model") if e.new == "exited")
    assert exited.cause == (
        f"spawn failed: cannot start model: cgroup device filter for fake:/{leaf}: "
        "bpf() not permitted (needs CAP_SYS_ADMIN)"
    )
    assert sup.records["model"].pid is None
    assert leaf not in fs.gpu_filters
