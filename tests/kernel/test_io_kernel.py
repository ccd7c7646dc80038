"""I/O weights that act on a real kernel: io.cost turned on for a disk where a profile
sets io_weight and neither io.cost nor BFQ would enforce it, and off again after."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.kernel.test_daemon import Nxrd

QOS = Path("/sys/fs/cgroup/io.cost.qos")


def devno_of(mnt: Path) -> str:
    source = subprocess.run(
        ["findmnt", "-no", "SOURCE", str(mnt)], capture_output=True, text=True, check=True
    ).stdout.strip()  # /dev/loopN
    return (Path("/sys/block") / Path(source).name / "dev").read_text().strip()


def enabled(devno: str) -> bool:
    return any(
        line.split()[0] == devno and "enable=1" in line.split()
        for line in QOS.read_text().splitlines()
    )


def test_io_weight_turns_io_cost_on_for_the_disk_and_off_after(
    tmp_path: Path, cgroup_root: Path, ext4: Path
) -> None:
    devno = devno_of(ext4)
    assert not enabled(devno)  # the kernel's default: weights do nothing there
    text = (
        '[workloads.a]\ncommand = ["sleep", "600"]\nclass = "batch"\nio_weight = 1000\n'
        '[workloads.b]\ncommand = ["sleep", "600"]\nclass = "batch"\nio_weight = 100\n'
    )
    d = Nxrd(tmp_path, text, cgroup_root).start()
    try:
        d.wait_for(lambda: any("io.cost turned on" in e[2] for e in d.events("nxrd")))
        assert enabled(devno)
        said = next(e[2] for e in d.events("nxrd") if "io.cost turned on" in e[2])
        assert devno in said
        weight = (cgroup_root / "batch/a/io.weight").read_text().split()
        assert weight[:2] == ["default", "1000"]
    finally:
        d.stop()
    assert not enabled(devno)
