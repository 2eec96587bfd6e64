"""Kubernetes objects of each cluster folder, validated with kubernetes-validate (strict schemas) and checked for the
wiring the plan needs: MIG resources under the mixed strategy, platform-label placement, storage and weights per
mode, shutdown timing, rollouts, autoscaling, probes, non-root, secrets by reference."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from tests.unit.bundle_fixtures import by_kind, container, documents, emit, flag
from tests.unit.plan_fixtures import mixed_plan, multi_cloud_plan, whole_gpu_only_plan
from vlmopt.emit import EmitError
from vlmopt.emit.groups import mig_resource_name

K8S_VERSION = "1.37.0"
CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "storage.k8s.io/v1")


def core_documents(files: dict[str, str]) -> list[tuple[str, dict]]:
    return [(p, d) for p, d in documents(files) if d["apiVersion"] in CORE_GROUPS]


VARIANTS = {
    "default": {},
    "shared-storage-hpa": {"storage": {"mode": "shared", "efs_file_system_id": "fs-0123456789abcdef0"},
                           "autoscaling": {"engine": "hpa"}},
    "fixed-replicas": {"autoscaling": {"engine": "none"}, "secrets": {"require_api_key": False}},
    "ab-istio": {"gateway": "istio", "ab": {"service": "chat", "variant": "fp8", "model": "Org/chat-fp8",
                                            "weight_percent": 10}},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant_files(request: pytest.FixtureRequest) -> dict[str, str]:
    return emit(multi_cloud_plan(), **VARIANTS[request.param])


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return emit(mixed_plan())


def test_every_object_passes_strict_kubernetes_validate(variant_files: dict[str, str]) -> None:
    checked = 0
    for path, doc in core_documents(variant_files):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}"
            )
        checked += 1
    assert checked >= 20


def test_strict_validation_catches_a_typo(files: dict[str, str]) -> None:
    """The validator is not a rubber stamp: an unknown field in a container fails strict validation."""
    doc = by_kind(files, "Deployment")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_one_deployment_per_group_with_the_planned_minimum(files: dict[str, str]) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(files, "Deployment")}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in by_kind(files, "ScaledObject")}
    assert set(deployments) == set(scaled)
    counts = {
        (d["metadata"]["labels"]["vlmopt.io/service"], d["metadata"]["labels"]["vlmopt.io/slice"],
         d["metadata"]["labels"]["vlmopt.io/market"]): scaled[name]["minReplicaCount"]
        for name, d in deployments.items()
    }
    assert counts[("chat", "3g.40gb", "on-demand")] == 2
    assert counts[("docs", "whole", "on-demand")] == 2
    plan = mixed_plan()
    per_gpu = sum(len(g.gpu_layout.replicas) * g.instances * g.gpus_per_instance for g in plan.node_groups)
    assert sum(s["minReplicaCount"] for s in scaled.values()) == per_gpu
    # autoscaling doubles at most, and the node pools' maximum sizes hold it (placement check)
    assert all(s["maxReplicaCount"] == 2 * s["minReplicaCount"] for s in scaled.values())


def test_mig_resources_under_mixed_strategy_and_whole_gpus(files: dict[str, str]) -> None:
    for d in by_kind(files, "Deployment"):
        slice_name = d["metadata"]["labels"]["vlmopt.io/slice"]
        resources = container(d)["resources"]
        expected = "nvidia.com/gpu" if slice_name == "whole" else mig_resource_name(slice_name)
        assert resources["limits"][expected] == resources["requests"][expected] == "1"
        assert [k for k in resources["limits"] if k.startswith("nvidia.com/")] == [expected]


def test_placement_uses_gpu_product_mig_config_and_capacity_type(files: dict[str, str]) -> None:
    for d in by_kind(files, "Deployment"):
        terms = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        # EKS managed node groups or Karpenter: either capacity-type label places the pod.
        keys = [{e["key"] for e in t["matchExpressions"]} for t in terms]
        assert {"eks.amazonaws.com/capacityType"} < keys[0] and {"karpenter.sh/capacity-type"} < keys[1]
        market = d["metadata"]["labels"]["vlmopt.io/market"]
        capacity = next(e for e in terms[0]["matchExpressions"] if e["key"] == "eks.amazonaws.com/capacityType")
        assert capacity["values"] == ["SPOT" if market == "spot" else "ON_DEMAND"]
        product = next(e for e in terms[0]["matchExpressions"] if e["key"] == "nvidia.com/gpu.product")
        assert all(" " not in v for v in product["values"])  # GFD replaces spaces with '-'
        tolerated = {t["key"] for t in d["spec"]["template"]["spec"]["tolerations"]}
        assert ("vlmopt.io/spot" in tolerated) == (market == "spot")


def test_gke_spot_pods_use_gke_labels_and_the_short_grace() -> None:
    files = emit(multi_cloud_plan())
    gke = [d for p, d in documents(files, "clusters/gcp-us-east4/") if d["kind"] == "Deployment"]
    assert len(gke) == 1
    pod = gke[0]["spec"]["template"]["spec"]
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]} in exprs[0]["matchExpressions"]
    assert pod["terminationGracePeriodSeconds"] == 15
    args = container(gke[0])["args"]
    assert int(flag(args, "--shutdown-timeout")) + 3 <= 15


def test_shutdown_drains_within_the_grace_period(files: dict[str, str]) -> None:
    for d in by_kind(files, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container(d)
        drain = int(flag(c["args"], "--shutdown-timeout"))
        prestop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert 0 < prestop + drain < pod["terminationGracePeriodSeconds"]
        if d["metadata"]["labels"]["vlmopt.io/market"] == "spot":
            assert pod["terminationGracePeriodSeconds"] <= 110  # AWS: 2-minute notice


def test_probes_security_secrets_and_offline_serving(files: dict[str, str]) -> None:
    for d in by_kind(files, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container(d)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e for e in c["env"]}
        key_ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert "value" not in env["VLLM_API_KEY"] and key_ref["optional"] is False
        assert env["HF_HUB_OFFLINE"]["value"] == "1" and "HF_TOKEN" not in env  # only the download step needs it
        init = pod["initContainers"][0]
        assert {e["name"] for e in init["env"]} >= {"HF_TOKEN"}
        assert c["command"] == ["vllm", "serve"]
        shm = next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]
        assert shm["medium"] == "Memory"


def test_mig_pods_pin_batching_and_memory_flags(files: dict[str, str]) -> None:
    for d in by_kind(files, "Deployment"):
        args = container(d)["args"]
        if d["metadata"]["labels"]["vlmopt.io/slice"] != "whole":
            for name in ("--gpu-memory-utilization", "--max-num-seqs", "--max-num-batched-tokens"):
                assert name in args, (d["metadata"]["name"], name)
        assert "compressed-tensors" not in args
        assert flag(args, "--model").startswith("/models/")
        buckets = json.loads(flag(args, "--custom-histogram-buckets"))
        assert 8.0 in buckets["request_latency"]  # docs' 8 s e2el SLO is a bucket edge


def test_per_pod_storage_is_an_ephemeral_block_volume_filled_by_the_init_step(files: dict[str, str]) -> None:
    classes = {c["metadata"]["name"]: c for c in by_kind(files, "StorageClass")}
    assert classes["vlmopt-rwo"]["provisioner"] == "ebs.csi.aws.com"
    assert classes["vlmopt-rwo"]["volumeBindingMode"] == "WaitForFirstConsumer"
    for d in by_kind(files, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        models = next(v for v in pod["volumes"] if v["name"] == "models")
        spec = models["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert spec["accessModes"] == ["ReadWriteOnce"] and spec["storageClassName"] == "vlmopt-rwo"
        script = pod["initContainers"][0]["command"][-1]
        target = flag(container(d)["args"], "--model")
        assert f"{target}/.vlmopt-complete" in script
        if "qwen2.5-vl-3b" in target:  # the local checkpoint, copied from the bucket
            assert "aws s3 sync" in script and "s3://vlmopt-test-models/qwen/qwen2.5-vl-3b/fp8" in script
        else:  # a hub id, downloaded from the hub
            assert "hf download Qwen/Qwen2.5-VL-7B-Instruct-AWQ" in script


def test_shared_storage_is_one_rwx_volume_filled_by_jobs() -> None:
    files = emit(multi_cloud_plan(), storage={"mode": "shared", "efs_file_system_id": "fs-0123456789abcdef0"})
    aws = [d for p, d in documents(files, "clusters/aws-us-east-1/")]
    sc = next(d for d in aws if d["kind"] == "StorageClass")
    assert sc["provisioner"] == "efs.csi.aws.com" and sc["parameters"]["fileSystemId"] == "fs-0123456789abcdef0"
    pvc = next(d for d in aws if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == sc["metadata"]["name"]
    jobs = [d for d in aws if d["kind"] == "Job"]
    assert len(jobs) == 2  # one per checkpoint
    gcp_sc = next(d for p, d in documents(files, "clusters/gcp-us-east4/") if d["kind"] == "StorageClass")
    assert gcp_sc["provisioner"] == "filestore.csi.storage.gke.io"
    gcp_pvc = next(d for p, d in documents(files, "clusters/gcp-us-east4/") if d["kind"] == "PersistentVolumeClaim")
    assert gcp_pvc["spec"]["resources"]["requests"]["storage"] == "1024Gi"  # Filestore's smallest instance
    for d in by_kind(files, "Deployment"):
        assert "until test -f" in d["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]


def test_shared_storage_on_aws_without_efs_is_refused() -> None:
    with pytest.raises(EmitError, match="efs_file_system_id"):
        emit(mixed_plan(), storage={"mode": "shared"})


def test_pdb_and_services(files: dict[str, str]) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(files, "Deployment")}
    for pdb in by_kind(files, "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1
    for svc in by_kind(files, "Service"):
        matched = [d for d in deployments.values()
                   if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        # the pool Service: spot and on-demand, every slice type, behind one name
        assert {d["metadata"]["labels"]["vlmopt.io/market"] for d in matched} == {"spot", "on-demand"}


def test_keda_queries_the_groups_queue_at_the_configured_prometheus(files: dict[str, str]) -> None:
    for so in by_kind(files, "ScaledObject"):
        trigger = so["spec"]["triggers"][0]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
        assert f'replica_group="{so["spec"]["scaleTargetRef"]["name"]}"' in trigger["metadata"]["query"]


def test_hpa_engine_emits_adapter_values_with_the_prometheus_url() -> None:
    files = emit(mixed_plan(), autoscaling={"engine": "hpa"}, prometheus_url="http://prom.mon.svc:9091/prom")
    values = yaml.safe_load(files["clusters/aws-us-east-1/autoscaling/prometheus-adapter-values.yaml"])
    assert values["prometheus"] == {"url": "http://prom.mon.svc", "port": 9091, "path": "/prom"}
    hpas = by_kind(files, "HorizontalPodAutoscaler")
    assert hpas and not by_kind(files, "ScaledObject")


def test_whole_gpu_plan_requests_nvidia_gpu_only() -> None:
    files = emit(whole_gpu_only_plan())
    for d in by_kind(files, "Deployment"):
        limits = container(d)["resources"]["limits"]
        assert not any(k.startswith("nvidia.com/mig-") for k in limits)
        assert limits["nvidia.com/gpu"] == "1"


def test_media_extension_profile_uses_the_plugins_resource_spelling() -> None:
    assert mig_resource_name("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    assert mig_resource_name("3g.40gb") == "nvidia.com/mig-3g.40gb"


def test_host_sizing_from_the_plan_sets_requests_and_api_servers() -> None:
    """The planner's HostSizing (preprocessing-bound replica: 3 API servers, 6 cores, 20 GiB) reaches the pod, within
    the replica's share of its p5.4xlarge (16 vCPU, 256 GiB, four replicas on the H100)."""
    from tests.unit.plan_fixtures import node_groups
    from vlmopt.schemas import HostSizing, Provenance

    host = HostSizing(api_server_count=3, cpu_cores=6.0, memory_gib=20.0, preprocess_ms_per_image=35.0,
                      provenance=Provenance(kind="estimated", source="vlmopt host model (test)"))
    groups = node_groups()
    for i in (0, 1):
        layout = groups[i].gpu_layout
        replicas = [r.model_copy(update={"host": host}) if r.slice == "3g.40gb" else r for r in layout.replicas]
        groups[i] = groups[i].model_copy(update={"gpu_layout": layout.model_copy(update={"replicas": replicas})})
    files = emit(mixed_plan(groups))
    sized = [d for d in by_kind(files, "Deployment") if d["metadata"]["name"].startswith("chat-awq-h100-sxm-80gb-3g")]
    assert len(sized) == 2
    for d in sized:
        c = container(d)
        assert flag(c["args"], "--api-server-count") == "3"
        assert c["resources"]["requests"]["cpu"] == "6000m"
        assert c["resources"]["requests"]["memory"] == f"{(20 + 2) * 1024}Mi"  # + the 2 GiB /dev/shm it holds
        assert "host sizing: estimated (vlmopt host model (test))" in (
            d["spec"]["template"]["metadata"]["annotations"]["vlmopt.io/sizing"])
    others = [d for d in by_kind(files, "Deployment") if d not in sized]
    assert all("--api-server-count" not in container(d)["args"] for d in others)
