"""Memory on a real kernel: who the OOM killer takes when the whole machine runs out, and
right-sizing giving back the page cache a workload does not use."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.kernel.test_daemon import Nxrd, alive, pids_of

PY = sys.executable

# Holds 64 MiB, touched, and waits.
HOLDER = textwrap.dedent(
    """
    import time
    kept = bytearray(64 << 20)
    for i in range(0, len(kept), 4096):
        kept[i] = 1
    print("holding", flush=True)
    time.sleep(600)
    """
)
# Takes memory 64 MiB at a time until killed (at most 8 GiB: more than the test VM has).
BOMB = textwrap.dedent(
    """
    import time
    held = []
    for _ in range(128):
        chunk = bytearray(64 << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        held.append(chunk)
    time.sleep(600)
    """
)


def test_a_machine_out_of_memory_loses_batch_work_not_the_latency_critical_server(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """No memory_max anywhere: the machine itself runs out. The kernel's OOM killer picks
    by oom_score_adj (nxr's class bands) and takes the whole batch leaf
    (memory.oom.group); the latency-critical server and the interactive one keep their
    processes, and nxrd reports the batch job's exit as an OOM kill."""
    for name, code in (("holder.py", HOLDER), ("bomb.py", BOMB)):
        (tmp_path / name).write_text(code)
    holder, bomb = tmp_path / "holder.py", tmp_path / "bomb.py"
    text = (
        "[host]\nmemory_guard = { enabled = false }\n"  # the kernel's own choice, here
        f'[workloads.chat]\ncommand = ["{PY}", "{holder}"]\nclass = "latency-critical"\n'
        'cpus = 1\nrestart = {policy = "no"}\n'
        f'[workloads.web]\ncommand = ["{PY}", "{holder}"]\nrestart = {{policy = "no"}}\n'
        f'[workloads.bomb]\ncommand = ["{PY}", "{bomb}"]\nclass = "batch"\n'
        'restart = {policy = "no"}\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    chat, web = cgroup_root / "latency-critical/chat", cgroup_root / "interactive/web"
    try:
        d.wait_for(lambda: all(d.state_of(n).get("state") == "ready" for n in ("chat", "web")))
        d.wait_for(lambda: pids_of(chat) and pids_of(web))
        pids = {n: pids_of(leaf)[0] for n, leaf in (("chat", chat), ("web", web))}
        adj = {n: int(Path(f"/proc/{p}/oom_score_adj").read_text()) for n, p in pids.items()}
        assert adj == {"chat": -850, "web": -250}
        d.wait_for(
            lambda: any(e[1] == "exited" and e[2] == "oom" for e in d.events("bomb")), timeout=300
        )
        assert all(alive(p) for p in pids.values())  # neither server was the victim
        assert [e for e in d.events("chat") if e[1] == "exited"] == []
    finally:
        d.stop()


# Takes memory 32 MiB at a time every 50 ms (640 MiB/s) until killed.
STEADY_BOMB = (
    BOMB.replace("held.append(chunk)", "held.append(chunk); time.sleep(0.05)")
    .replace("64 << 20", "32 << 20")
    .replace("range(128)", "range(256)")
)


def kernel_oom_kills() -> int:
    """The kernel's OOM kills since boot (/proc/vmstat oom_kill)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError("no oom_kill in /proc/vmstat")


def test_the_memory_guard_kills_the_batch_job_before_the_kernel_has_to(
    tmp_path: Path, cgroup_root: Path
) -> None:
    """The same machine running out, the guard on: nxrd kills the batch job's leaf while
    15% of memory is still available, so the kernel's OOM killer never runs (its count in
    /proc/vmstat stays put); the latency-critical server keeps its process."""
    for name, code in (("holder.py", HOLDER), ("bomb.py", STEADY_BOMB)):
        (tmp_path / name).write_text(code)
    holder, bomb = tmp_path / "holder.py", tmp_path / "bomb.py"
    text = (
        "[host]\nmemory_guard = { available = 15 }\n"
        f'[workloads.chat]\ncommand = ["{PY}", "{holder}"]\nclass = "latency-critical"\n'
        'cpus = 1\nrestart = {policy = "no"}\n'
        f'[workloads.bomb]\ncommand = ["{PY}", "{bomb}"]\nclass = "batch"\n'
        'restart = {policy = "no"}\n'
    )
    before = kernel_oom_kills()
    d = Nxrd(tmp_path, text, cgroup_root).start()
    chat = cgroup_root / "latency-critical/chat"
    try:
        d.wait_for(lambda: d.state_of("chat").get("state") == "ready" and pids_of(chat))
        pid = pids_of(chat)[0]
        d.wait_for(lambda: any(e[1] == "exited" for e in d.events("bomb")), timeout=300)
        exited = [e for e in d.events("bomb") if e[1] == "exited"]
        assert exited[0][2].startswith("killed for memory: memory available"), exited
        assert "the only batch workload" in exited[0][2]
        assert kernel_oom_kills() == before
        assert alive(pid) and pids_of(chat) == [pid]
    finally:
        d.stop()


# Reads a file once (page cache it never needs again), then touches its working set
# (64 MiB) for ever, counting passes.
READ_ONCE = textwrap.dedent(
    """
    import sys, time
    with open(sys.argv[1], "rb") as f:
        while f.read(1 << 20):
            pass
    ws = bytearray(64 << 20)
    passes = 0
    with open(sys.argv[2], "w") as out:
        print("read", file=out, flush=True)
        while True:
            for i in range(0, len(ws), 4096):
                ws[i] = (ws[i] + 1) & 255
            passes += 1
            print(passes, file=out, flush=True)
    """
)


def stat(leaf: Path) -> dict[str, int]:
    return {
        k: int(v)
        for k, v in (line.split() for line in (leaf / "memory.stat").read_text().splitlines())
    }


def test_right_sizing_gives_back_page_cache_it_does_not_use(
    tmp_path: Path, cgroup_root: Path, ext4: Path
) -> None:
    """Without right_size the job keeps the page cache of a file it read once, twice its
    working set; once a reload gives it right_size (live: no restart), memory.current
    falls to within a fifth over what it uses besides that cache within a minute, and
    the job is never OOM-killed on the way."""
    cold = ext4 / "cold.bin"
    with cold.open("wb") as f:
        for _ in range(128):
            f.write(b"\x5a" * (1 << 20))
    subprocess.run(["sync"], check=True, timeout=120)
    Path("/proc/sys/vm/drop_caches").write_text("3")  # its pages come back charged to it
    (tmp_path / "read_once.py").write_text(READ_ONCE)
    progress = tmp_path / "progress"
    text = (
        f'[workloads.scan]\ncommand = ["{PY}", "{tmp_path}/read_once.py", "{cold}", "{progress}"]\n'
        'class = "batch"\nmemory_max = "1G"\nzswap_max = "32M"\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    leaf = cgroup_root / "batch/scan"
    try:
        d.wait_for(lambda: progress.exists() and progress.read_text().startswith("read"))
        assert (leaf / "memory.zswap.max").read_text().strip() == str(32 << 20)
        time.sleep(3)
        before = stat(leaf)
        assert before["file"] > 100 << 20, before  # the file it read: its page cache now
        pid = d.state_of("scan")["pid"]
        d.profile_file.write_text(text + 'right_size = {floor = "16M", interval = "1s"}\n')
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        start = time.monotonic()

        def sized() -> bool:
            s, current = stat(leaf), int((leaf / "memory.current").read_text())
            return current <= 1.2 * (current - s["file"])

        d.wait_for(sized, timeout=60)
        took = time.monotonic() - start
        high = (leaf / "memory.high").read_text().strip()
        assert high != "max" and int(high) >= 16 << 20
        assert [e for e in d.events("scan") if e[1] == "exited"] == []  # never OOM-killed
        assert d.state_of("scan")["pid"] == pid  # not restarted for it
        print(
            f"right-sized in {took:.1f}s: file {before['file'] >> 20} MiB -> "
            f"{stat(leaf)['file'] >> 20} MiB, memory.high {int(high) >> 20} MiB"
        )
    finally:
        d.stop()
