"""Events in the journal carry a PRIORITY, so `journalctl -u nxrd -p warning` shows what
went wrong and not every start."""

from __future__ import annotations

from pathlib import Path

from nxrd.daemon.core import Daemon
from nxrd.daemon.sinks import ERR, INFO, NOTICE, WARNING, priority
from nxrd.kernel.fake_host import FakeHost
from nxrd.model.topology import load_topology
from nxrd.supervisor.events import Event
from tests.unit.conftest import TOPOLOGIES

PROFILE = """
[workloads.chat]
command = ["serve"]
class = "latency-critical"
cpus = 1
restart = { max_restarts = 0 }
"""


def event(workload: str, old: str, new: str, cause: str) -> Event:
    return Event(0, 0.0, workload, old, new, cause)


def test_priorities() -> None:
    assert priority(event("chat", "pending", "starting", "dependencies ready")) == INFO
    assert priority(event("job", "ready", "exited", "exit code 0")) == INFO  # a job done
    assert priority(event("chat", "ready", "exited", "exit code 1")) == WARNING
    assert priority(event("chat", "ready", "exited", "oom")) == WARNING
    assert priority(event("chat", "backoff", "failed", "gave up after 5 restarts")) == ERR
    assert priority(event("nxrd", "healthy", "quarantined", "GPU 0 (GPU-1): Xid 79")) == WARNING
    assert priority(event("nxrd", "-", "-", "reload failed: p.toml: x: bad")) == ERR
    assert priority(event("nxrd", "-", "-", "warning: cpu_max never binds")) == WARNING
    assert priority(event("controller", "static", "cap-75%", "chat slack 5%")) == NOTICE


def test_the_journal_gets_each_event_with_its_priority_and_fields(tmp_path: Path) -> None:
    host = FakeHost(load_topology(TOPOLOGIES / "vm-2cpu.json"))
    host.journald = True
    (tmp_path / "p.toml").write_text(PROFILE)
    sock = str(tmp_path / "nxrd.sock")
    d = Daemon([str(tmp_path / "p.toml")], str(tmp_path / "s"), socket_path=sock, host=host)
    d.start()
    d.sup.tick(0.0)
    assert host.proc_runtime is not None
    host.proc_runtime.exit("chat", code=1)
    d.sup.tick(1.0)
    entries = [(m, f["PRIORITY"], f["NXR_WORKLOAD"]) for m, f in host.journaled]
    assert ("chat: pending -> starting (dependencies ready; pid 1002)", "6", "chat") in entries
    assert any(m.startswith("chat: ready -> exited (") and p == "4" for m, p, _ in entries)
    assert any(m.startswith("chat: exited -> failed (") and p == "3" for m, p, _ in entries)
    d.close()


def test_a_lone_surrogate_reaches_the_journal_as_a_question_mark() -> None:
    """A profile name with a lone surrogate made journal.send raise at every nxrd start."""
    from nxrd.daemon.sinks import sink

    got: list[tuple[str, dict[str, str]]] = []

    def journal(message: str, **fields: str) -> None:
        message.encode("utf-8")  # as the real journal.send does
        got.append((message, fields))

    sink(journal)(event("nxrd", "-", "-", "using the profile applied by nxrctl (\udcff.toml)"))
    assert got[0][0] == "nxrd: - -> - (using the profile applied by nxrctl (?.toml))"
