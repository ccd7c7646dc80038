"""A Kubernetes node without a kubelet, for the node agent's kernel test and benchmark:
the pods of a pod list laid out in the kubelet's cgroup names (for either driver; the VM
runs no systemd, so its names are plain directories) with the values the kubelet writes,
each container a real one started by runc as containerd's shim would, and the pod list
served over HTTP on loopback as the kubelet's /pods."""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nxrd.agent.pods import Driver, Pod, container_cgroup, parse_pods, pod_cgroup

CGROUP_ROOT = Path("/sys/fs/cgroup")
FIXTURE = Path(__file__).parents[1] / "fixtures" / "kubelet-pods.json"
CONTROLLERS = "+cpuset +cpu +memory +pids"
PYTHON = "/usr/bin/python3"  # the containers' root filesystem has /usr, not the venv


class Runc:
    """Containers started by runc from bundles under `where`."""

    def __init__(self, where: Path) -> None:
        self.where, self.state, self.ids = where, where / "runc-state", []
        self.rootfs = where / "rootfs"
        for d in ("usr", "etc", "proc", "dev", "sys", "tmp"):
            (self.rootfs / d).mkdir(parents=True)
        for link in ("bin", "lib", "lib64", "sbin"):
            (self.rootfs / link).symlink_to(f"usr/{link}")

    def start(self, cid: str, cgroup: Path, argv: list[str]) -> None:
        """Start container cid in cgroup, as containerd's runc shim would."""
        bundle = self.where / f"bundle-{cid[:12]}"
        bundle.mkdir()
        subprocess.run(["runc", "spec"], cwd=bundle, check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"].update(terminal=False, args=argv)
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        linux = spec["linux"]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        linux["cgroupsPath"] = f"/{cgroup.relative_to(CGROUP_ROOT)}"  # under the cgroup2 mount
        # No network namespace of its own, so sysfs cannot be mounted afresh: the VM's is
        # bound instead (read-only), with /usr, /etc and /tmp.
        mounts = [m for m in spec["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        for d, options in (("/sys", ["rbind", "ro"]), ("/usr", ["rbind", "ro"]),
                           ("/etc", ["rbind", "ro"]), ("/tmp", ["rbind"])):  # fmt: skip
            mounts.append({"destination": d, "type": "bind", "source": d, "options": options})
        spec["mounts"] = mounts
        (bundle / "config.json").write_text(json.dumps(spec))
        # runc's output to a file: the detached container keeps any pipe open
        with (self.where / "runc.log").open("a") as log:
            subprocess.run(
                ["runc", "--root", str(self.state), "run", "-d", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True, timeout=120,
            )  # fmt: skip
        self.ids.append(cid)
        state = subprocess.run(
            ["runc", "--root", str(self.state), "state", cid],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pid = json.loads(state.stdout)["pid"]
        # a real container: PID 1 of a namespace of its own, in the kubelet's cgroup
        nspid = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                 if ln.startswith("NSpid:")]  # fmt: skip
        assert nspid[0].split()[-1] == "1", nspid
        assert Path(f"/proc/{pid}/cgroup").read_text().strip() == f"0::{linux['cgroupsPath']}"

    def remove(self) -> None:
        for cid in self.ids:
            subprocess.run(["runc", "--root", str(self.state), "delete", "-f", cid], check=False)


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    """The pod list served as the kubelet serves /pods; yields its URL."""

    class Pods(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pods)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pods"
    finally:
        server.shutdown()


def lay_out(
    root: Path,
    driver: Driver,
    runc: Runc,
    cpusets: dict[str, str],
    argv: Callable[[Pod], list[str]],
    pod_list: Path = FIXTURE,
) -> dict[str, Path]:
    """The running pods of pod_list under root, with the values the kubelet writes
    (cpusets: QoS class -> cpuset.cpus, as the CPU manager sets them), each pod's
    container started with argv(pod); returns pod key -> pod cgroup."""
    pods = parse_pods(json.loads(pod_list.read_text()), "node-1")
    paths = {}
    for pod in pods:
        parts = pod_cgroup(pod, driver).split("/")
        for i in range(1, len(parts) + 1):
            d = root.joinpath(*parts[:i])
            if not d.exists():
                d.mkdir()
                (d / "cgroup.subtree_control").write_text(CONTROLLERS)
        pod_dir = root.joinpath(*parts)
        (pod_dir / "cpuset.cpus").write_text(cpusets[pod.qos])
        (pod_dir / "cpu.weight").write_text(str(pod.kubelet_weight))
        limit = pod.kubelet_cpu_max
        (pod_dir / "cpu.max").write_text("max" if limit is None else f"{int(limit * 1e5)} 100000")
        container = pod.containers[0]
        runc.start(container.id, root / container_cgroup(pod, container, driver), argv(pod))
        paths[pod.key] = pod_dir
    return paths
