"""Block devices, and whether cgroup I/O weights act on them.

io.weight is enforced only by io.cost (the root cgroup's io.cost.qos, per device, off by
default) or, under the BFQ scheduler, as io.bfq.weight; under mq-deadline, kyber or none
without io.cost, a weight changes nothing. nxr reads which is the case for each disk and
can turn io.cost on (its built-in linear model for the device class: `ctrl=auto`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nxrd.kernel.housekeeping import write_value


@dataclass(frozen=True)
class Disk:
    name: str  # sda, nvme0n1, vda, loop0
    devno: str  # MAJ:MIN
    scheduler: str  # the active one: mq-deadline, bfq, kyber, none
    iocost: bool | None  # io.cost enabled on it; None: this kernel has no io.cost

    def enforced(self) -> str | None:
        """How io.weight acts on it (None: it does not)."""
        if self.iocost:
            return "io.cost"
        if self.scheduler == "bfq":
            return "bfq"
        return None


class Disks:
    def __init__(self, sys: Path = Path("/sys"), cgroup: Path = Path("/sys/fs/cgroup")) -> None:
        self.sys, self.cgroup = sys, cgroup

    def list(self) -> list[Disk]:
        """Disks with a request queue and a size (an unattached loop device has none)."""
        qos = self._qos()
        out = []
        for d in sorted((self.sys / "block").glob("*")):
            try:
                if int((d / "size").read_text()) == 0:
                    continue
                devno = (d / "dev").read_text().strip()
                schedulers = (d / "queue/scheduler").read_text().split()
            except (OSError, ValueError):
                continue
            active = next((s.strip("[]") for s in schedulers if s.startswith("[")), "none")
            iocost = None if qos is None else qos.get(devno, False)
            out.append(Disk(d.name, devno, active, iocost))
        return out

    def _qos(self) -> dict[str, bool] | None:
        """Per device, whether io.cost is enabled (None: no io.cost in this kernel)."""
        try:
            text = (self.cgroup / "io.cost.qos").read_text()
        except OSError:
            return None
        out = {}
        for line in text.splitlines():
            devno, *fields = line.split()
            out[devno] = "enable=1" in fields
        return out

    def set_iocost(self, devno: str, enable: bool) -> None:
        line = f"{devno} enable={int(enable)} ctrl=auto"
        write_value(self.cgroup / "io.cost.qos", line)
