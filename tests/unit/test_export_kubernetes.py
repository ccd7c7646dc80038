"""nxrctl export kubernetes: manifests that a named Kubernetes version accepts, isolation
that the kubelet gives as nxr would, and a warning for what nothing carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from nxrd.cli.main import cli
from nxrd.errors import ProfileError
from nxrd.export.kubelet import kubelet_config
from nxrd.export.kubernetes import export
from nxrd.profile.load import load_profiles, parse_profile

K8S = "1.30.0"  # the schema version the manifests are checked against (strict: no unknown keys)
PROFILES = sorted((Path(__file__).parents[2] / "profiles").glob("*.toml"))

EVERYTHING = """
[host]
reserved_cpus = "0-1"
reserved_memory = "2G"
net = { interfaces = ["eth0"] }
[pools.gpu_jobs]
slots = 1
[workloads.chat]
command = ["python3", "-m", "chat", "--port", "8000"]
class = "latency-critical"
cpus = 4
memory_max = "8G"
gpus = 1
port = 8000
env = { MODEL = "/models/chat" }
user = "1000"
serve = { port = 80, inflight = 4, queue = 16 }
ready = { http = "http://127.0.0.1:8000/health?deep=1", timeout = "120s", interval = "2s" }
slo = { p99 = "200ms", window = "10s", source = { prometheus = { url = "http://127.0.0.1:8000/metrics", preset = "vllm" } } }
stop = { timeout = "30s" }
[workloads.embed_job]
command = ["embed"]
class = "batch"
cpus = 2
cpu_max = "300%"
memory_max = "4G"
memory_high = "3G"
right_size = { floor = "1G" }
io_weight = 50
pool = "gpu_jobs"
after = ["chat"]
net = { egress = "200Mbit", guarantee = "10Mbit" }
restart = { policy = "always", max_restarts = 100 }
control = { min_cpu = "50%" }
[workloads.reindex]
command = ["reindex", "--once"]
class = "background"
restart = { policy = "no" }
user = "indexer"
ready = { tcp = "127.0.0.1:9000", interval = "200ms" }
"""


def docs(text: str, images: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    result = export(parse_profile(text, expanded=False), images or {"": "registry.example/m:1"})
    for doc in result.documents:
        kubernetes_validate.validate(doc, K8S, strict=True)
    return result.documents, result.warnings


def kind(documents: list[dict[str, Any]], k: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in documents if d["kind"] == k and d["metadata"]["name"] == name]
    return doc


def container(documents: list[dict[str, Any]], k: str, name: str) -> dict[str, Any]:
    return kind(documents, k, name)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_every_shipped_profile_exports_to_manifests_kubernetes_accepts(path: Path) -> None:
    result = export(load_profiles([str(path)], expanded=False)[0], {"": "registry.example/m:1"})
    assert result.documents
    for doc in result.documents:
        assert kubernetes_validate.validate(doc, K8S, strict=True)


def test_the_schema_check_is_strict_enough_to_catch_a_wrong_manifest() -> None:
    documents, _ = docs(EVERYTHING)
    wrong = json.loads(json.dumps(kind(documents, "Deployment", "chat")))
    wrong["spec"]["template"]["spec"]["containers"][0]["cpus"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S, strict=True)


def test_a_latency_critical_workload_is_a_guaranteed_pod_with_whole_cpus_and_its_gpus() -> None:
    documents, _ = docs(EVERYTHING)
    c = container(documents, "Deployment", "chat")
    # requests = limits in whole CPUs: Guaranteed QoS, which the static CPU manager pins
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "8Gi"},
    }
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4"
    assert env["MODEL"] == "/models/chat" and env["NXR_PORT"] == "8000"
    assert c["securityContext"] == {"runAsUser": 1000}
    pod = kind(documents, "Deployment", "chat")["spec"]["template"]
    assert pod["spec"]["priorityClassName"] == "nxr-latency-critical"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30


def test_what_the_node_agent_needs_travels_as_annotations() -> None:
    documents, _ = docs(EVERYTHING)
    notes = kind(documents, "Deployment", "chat")["spec"]["template"]["metadata"]["annotations"]
    assert notes["nxr.io/class"] == "latency-critical"
    slo = json.loads(notes["nxr.io/slo"])
    assert slo["p99"] == 0.2 and slo["window"] == 10.0
    assert slo["source"]["prometheus"]["preset"] == "vllm"
    batch = kind(documents, "Deployment", "embed-job")["spec"]["template"]["metadata"]
    assert json.loads(batch["annotations"]["nxr.io/control"])["min_cpu"] == 0.5
    # the bandwidth CNI plugin's own annotation, in bits per second
    assert batch["annotations"]["kubernetes.io/egress-bandwidth"] == "200000000"


def test_a_batch_workload_is_burstable_with_its_cap_as_the_limit() -> None:
    documents, _ = docs(EVERYTHING)
    c = container(documents, "Deployment", "embed-job")
    assert c["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"cpu": "3", "memory": "4Gi"},
    }
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["OMP_NUM_THREADS"] == "2"


def test_a_cap_without_cpus_asks_for_the_least_the_controller_leaves_it() -> None:
    documents, _ = docs('[workloads.b]\ncommand = ["b"]\nclass = "batch"\ncpu_max = "150%"\n')
    res = container(documents, "Deployment", "b")["resources"]
    # without a request the API server would copy the limit into it (and pin nothing)
    assert res == {"requests": {"cpu": "100m"}, "limits": {"cpu": "1500m"}}
    env = {e["name"]: e["value"] for e in container(documents, "Deployment", "b")["env"]}
    assert env["OMP_NUM_THREADS"] == "2"


def test_a_workload_that_is_not_restarted_is_a_job_and_background_is_best_effort() -> None:
    documents, _ = docs(EVERYTHING)
    job = kind(documents, "Job", "reindex")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert "resources" not in c or c["resources"] == {}
    assert c["startupProbe"]["tcpSocket"] == {"port": 9000}


def test_a_served_model_gets_a_service_and_its_readiness_probes() -> None:
    documents, _ = docs(EVERYTHING)
    svc = kind(documents, "Service", "chat")
    assert svc["spec"]["ports"] == [{"port": 80, "targetPort": 8000, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "chat"}
    c = container(documents, "Deployment", "chat")
    get = {"path": "/health?deep=1", "port": 8000, "scheme": "HTTP"}
    # ready.timeout (120 s) is the start's allowance: 60 probes 2 s apart
    assert c["startupProbe"] == {"httpGet": get, "periodSeconds": 2, "failureThreshold": 60}
    assert c["readinessProbe"] == {"httpGet": get, "periodSeconds": 2}


def test_priority_classes_follow_the_ladder_and_lower_classes_never_preempt() -> None:
    documents, _ = docs(EVERYTHING)
    classes = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PriorityClass"}
    assert list(classes) == ["nxr-latency-critical", "nxr-batch", "nxr-background"]
    values = [c["value"] for c in classes.values()]
    assert values == sorted(values, reverse=True)
    assert classes["nxr-batch"]["preemptionPolicy"] == "Never"


def test_every_feature_kubernetes_cannot_carry_is_a_warning_naming_it() -> None:
    _, warnings = docs(EVERYTHING)
    expected = [
        "host: reserved_cpus",  # not a warning: it goes to the kubelet config (below)
    ]
    assert not [w for w in warnings if w.startswith(expected[0])]
    for needle in (
        "workload embed_job: memory_high:",
        "workload embed_job: right_size:",
        "workload embed_job: io_weight:",
        "workload embed_job: after:",
        "workload embed_job: pool:",
        "workload embed_job: restart.max_restarts:",
        "workload embed_job: net.guarantee:",
        "workload chat: serve.inflight:",
        "workload chat: serve.queue:",
        "workload reindex: user 'indexer':",
        "workload reindex: ready.interval under 1s",
        "pools:",
        "host: net:",
    ):
        assert [w for w in warnings if w.startswith(needle)], (needle, warnings)
    # a default the profile did not set is not the profile asking for something
    assert not [w for w in warnings if "chat: restart" in w or "swap_max" in w]


def test_what_cannot_be_exported_is_refused_with_every_reason_at_once() -> None:
    text = (
        '[workloads.1st]\ncommand = ["a"]\n'
        '[workloads.lc]\ncommand = ["b"]\nclass = "latency-critical"\ncpus = 2\n'
        '[workloads.a_b]\ncommand = ["c"]\n[workloads.a-b]\ncommand = ["d"]\n'
    )
    with pytest.raises(ProfileError) as e:
        export(parse_profile(text, expanded=False), {"lc": "m:1"})
    lines = e.value.lines()
    assert "workloads.1st: '1st': a Kubernetes name starts with a letter" in lines[0]
    assert "workloads.lc.memory_max: an exclusive workload needs one" in "\n".join(lines)
    assert "workloads.a-b: the same Kubernetes name as a_b: a-b" in lines
    assert "workloads.a_b: no image: pass --image a_b=IMAGE or --image IMAGE" in lines


def test_the_kubelet_configuration_reserves_nxrs_cpus_and_memory() -> None:
    profile = parse_profile(EVERYTHING)
    config = kubelet_config(profile)
    assert config["cpuManagerPolicy"] == "static"
    assert config["reservedSystemCPUs"] == "0-1"
    # a pinned workload with a GPU: CPUs and GPU on one NUMA node, or the pod is refused
    assert config["topologyManagerPolicy"] == "restricted"
    assert config["systemReserved"] == {"memory": "2Gi"}
    assert config["reservedMemory"] == [{"numaNode": 0, "limits": {"memory": "2148Mi"}}]


def test_nxrctl_export_prints_yaml_and_the_warnings_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(EVERYTHING)
    runner = CliRunner()
    out = runner.invoke(
        cli, ["export", "kubernetes", str(path), "--image", "m:1", "--image", "chat=vllm:0.6"]
    )
    assert out.exit_code == 0, out.output
    documents = list(yaml.safe_load_all(out.stdout))
    assert container(documents, "Deployment", "chat")["image"] == "vllm:0.6"
    assert container(documents, "Deployment", "embed-job")["image"] == "m:1"
    assert "&id" not in out.stdout  # each document reads on its own, no YAML anchors
    assert f"{path}: warning: workload embed_job: io_weight:" in out.stderr
    assert "warning" not in out.stdout
    config = runner.invoke(cli, ["export", "kubernetes", str(path), "--kubelet"])
    assert yaml.safe_load(config.stdout)["kind"] == "KubeletConfiguration"


def test_nxrctl_export_refuses_an_image_for_a_workload_the_profile_lacks(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(EVERYTHING)
    out = CliRunner().invoke(cli, ["export", "kubernetes", str(path), "--image", "chta=x:1"])
    assert out.exit_code == 2
    assert "no workload 'chta' in the profile" in out.stderr
    missing = CliRunner().invoke(cli, ["export", "kubernetes", str(path)])
    assert missing.exit_code == 1
    assert "workloads.chat: no image: pass --image chat=IMAGE or --image IMAGE" in missing.stderr
