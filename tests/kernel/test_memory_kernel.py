"""Memory on a real kernel: who the OOM killer takes when the whole machine runs out."""

from __future__ import annotations

import sys
import textwrap
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
