"""Which /dev/nvidia* nodes a workload may open: the cgroup v2 device controller.

cgroup v2 has no devices.allow file. Device access is decided by eBPF programs of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to a cgroup: on every open(2) and mknod(2) of a device
node, the kernel runs the programs of the process's cgroup and of each ancestor, and any
that returns 0 makes the call fail with EPERM (Documentation/admin-guide/cgroup-v2.rst,
"Device controller"; kernel/bpf/cgroup.c, __cgroup_bpf_check_dev_permission).

nxr's program narrows only NVIDIA's character major 195: /dev/nvidiaN (minor N, NVML's
minor number), /dev/nvidia-modeset (254) and /dev/nvidiactl (255). Everything else (block
devices, /dev/null, /dev/nvidia-uvm, whose major is dynamic) is allowed, so the filter
never breaks a workload that did not ask for GPUs. nvidiactl and nvidia-modeset stay open
to all: the driver's libraries open nvidiactl before looking for devices, and CUDA with no
usable GPU then reports "no CUDA-capable device" instead of failing on a permission.

No libbpf: the program is a dozen instructions assembled here, loaded and attached through
the bpf(2) system call with ctypes (include/uapi/linux/bpf.h has every layout used below).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable
from pathlib import Path

from nxrd.errors import KernelError

NVIDIA_MAJOR = 195
NVIDIA_MODESET = 254
NVIDIA_CTL = 255
ALWAYS_ALLOWED = (NVIDIA_MODESET, NVIDIA_CTL)
MAX_MINOR = (1 << 20) - 1  # the kernel's MINORBITS

# bpf(2) commands, types and flags (include/uapi/linux/bpf.h).
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # the attach type
_BPF_F_ALLOW_MULTI = 2
_BPF_DEVCG_DEV_CHAR = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128  # larger than any field used; the kernel accepts a zero tail
_LOG_SIZE = 1 << 16
_MAX_PROGS = 64  # BPF_CGROUP_MAX_PROGS

# Opcodes (Documentation/bpf/instruction-set.rst): class | operation | source.
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: dst = (u32)dst & imm
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if dst == imm: pc += off
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K: if dst != imm: pc += off
_MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
_EXIT = 0x95  # BPF_JMP | BPF_EXIT: return r0


def gpu_node(minor: int) -> str:
    """The device node of NVIDIA GPU minor (NVML's minor number)."""
    return f"/dev/nvidia{minor}"


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4 (dst in the low nibble); s16; s32.
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def device_filter(gpu_minors: Iterable[int]) -> bytes:
    """The program: allow all but char 195:N, where only the given minors (and 254, 255) pass."""
    minors = sorted(set(gpu_minors) | set(ALWAYS_ALLOWED))
    bad = [m for m in minors if not 0 <= m <= MAX_MINOR]
    if bad:
        raise KernelError(f"cgroup device filter: {bad[0]} is not a device minor number")
    n = len(minors)
    allow = 8 + n  # index of the "return 1" tail; a jump's offset counts from the next insn
    # r1 holds struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }.
    prog = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),  # r2 = access_type: (access << 16) | type
        _insn(_ALU32_AND_K, dst=2, imm=0xFFFF),  # r2 = type; any access (mknod, read, write)
        _insn(_LDX_MEM_W, dst=3, src=1, off=4),  # r3 = major
        _insn(_LDX_MEM_W, dst=4, src=1, off=8),  # r4 = minor
        _insn(_JNE_K, dst=2, off=allow - 5, imm=_BPF_DEVCG_DEV_CHAR),
        _insn(_JNE_K, dst=3, off=allow - 6, imm=NVIDIA_MAJOR),
    ]
    prog += [_insn(_JEQ_K, dst=4, off=allow - (7 + i), imm=m) for i, m in enumerate(minors)]
    prog += [
        _insn(_MOV64_K, dst=0, imm=0),  # an NVIDIA node not on the list: EPERM
        _insn(_EXIT),
        _insn(_MOV64_K, dst=0, imm=1),
        _insn(_EXIT),
    ]
    return b"".join(prog)


def _bpf(cmd: int, attr: bytes | ctypes.Array[ctypes.c_char]) -> int:
    """bpf(2); raises OSError. attr is padded to _ATTR_SIZE (the kernel may write into it)."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf() number unknown on {platform.machine()}")
    buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(attr, _ATTR_SIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    ret = int(libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(len(buf))))
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return ret


def _load(program: bytes) -> int:
    """Load program; its fd. KernelError with the verifier's last line if it is refused."""
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = struct.pack(
        "<IIQQIIQII16s",
        _BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,  # log_level: the verifier says why it refused
        _LOG_SIZE,
        ctypes.addressof(log),
        0,  # kern_version
        0,  # prog_flags
        b"nxr_devices",  # prog_name, as `bpftool cgroup show` lists it
    )
    try:
        return _bpf(_BPF_PROG_LOAD, attr)
    except OSError as e:
        # The verifier ends its log with statistics ("processed 1 insns (limit ...) ...")
        # even when it refuses; the reason is the line before them.
        lines = [
            line
            for line in log.value.decode(errors="replace").splitlines()
            if line and not line.startswith(("processed ", "verification time", "stack depth"))
        ]
        if lines:
            raise KernelError(
                f"cgroup device filter: the verifier refused it: {lines[-1]}"
            ) from None
        if e.errno in (errno.EPERM, errno.EACCES):
            why = "bpf() not permitted (needs CAP_SYS_ADMIN: run nxrd as root)"
        elif e.errno == errno.ENOSYS:
            why = "this kernel has no bpf() system call (needs CONFIG_BPF_SYSCALL)"
        elif e.errno == errno.EINVAL:
            why = "this kernel has no cgroup device programs (needs CONFIG_CGROUP_BPF)"
        else:
            why = f"cannot load the program: {e.strerror}"
        raise KernelError(f"cgroup device filter: {why}") from None


def _attached(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached to this cgroup itself (not its ancestors)."""
    ids = (ctypes.c_uint32 * _MAX_PROGS)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(
        "<IIIIQI", attr, 0, cgroup_fd, _BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), _MAX_PROGS
    )
    _bpf(_BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]  # prog_cnt, written back by the kernel
    return list(ids[:count])


def _detach(cgroup_fd: int, prog_id: int) -> None:
    try:
        fd = _bpf(_BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return  # already gone
        raise
    try:
        _bpf(_BPF_PROG_DETACH, struct.pack("<IIII", cgroup_fd, fd, _BPF_CGROUP_DEVICE, 0))
    finally:
        os.close(fd)


def restrict_gpus(cgroup_dir: str | Path, gpu_minors: Iterable[int]) -> None:
    """Attach the filter to cgroup_dir, replacing any an earlier run of nxrd attached there.

    Call it while no process is in the cgroup. Raises KernelError (one line) if the kernel
    cannot or will not filter; then the previous filter, if any, is left in place.
    """
    where = f"cgroup device filter for {cgroup_dir}"
    prog = _load(device_filter(gpu_minors))
    try:
        try:
            cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise KernelError(f"{where}: cannot open it: {e.strerror}") from None
        try:
            # Programs on one cgroup all run and must all allow: a filter left by a previous
            # run (other GPUs, before a profile change) would narrow this one. Replace it.
            try:
                old = _attached(cg)
            except OSError as e:
                raise KernelError(f"{where}: {_attach_failure(e)}") from None
            attr = struct.pack("<IIII", cg, prog, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI)
            try:
                _bpf(_BPF_PROG_ATTACH, attr)
            except OSError as e:
                raise KernelError(f"{where}: {_attach_failure(e)}") from None
            try:
                for prog_id in old:
                    _detach(cg, prog_id)
            except OSError as e:
                raise KernelError(
                    f"{where}: cannot detach the previous one: {e.strerror}"
                ) from None
        finally:
            os.close(cg)
    finally:
        os.close(prog)  # the cgroup holds its own reference to an attached program


def _attach_failure(e: OSError) -> str:
    """Why listing or attaching programs on a cgroup failed, in words."""
    if e.errno == errno.EPERM:
        # Also what an ancestor's program attached without BPF_F_ALLOW_MULTI causes.
        return (
            "attaching not permitted (needs CAP_SYS_ADMIN, and no ancestor cgroup may hold "
            "a device program attached without BPF_F_ALLOW_MULTI)"
        )
    if e.errno in (errno.EINVAL, errno.EBADF):
        return "not a cgroup v2 directory, or the kernel lacks CONFIG_CGROUP_BPF"
    if e.errno == errno.E2BIG:
        return f"already {_MAX_PROGS} device programs attached"
    return f"cannot attach: {e.strerror}"


def support() -> str | None:
    """Why device filtering cannot work here (None: it can), by loading the program unattached."""
    try:
        fd = _load(device_filter([]))
    except KernelError as e:
        return str(e)
    os.close(fd)
    return None
