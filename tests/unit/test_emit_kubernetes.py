"""Kubernetes objects of the bundle, validated with kubernetes-validate (strict schemas) and checked for the wiring
the plan needs: MIG resources under the mixed strategy, node pools, probes, non-root, secrets by reference."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.unit.plan_fixtures import mixed_plan, whole_gpu_only_plan
from vlmopt.emit import emit_kubernetes, emit_mig_parted
from vlmopt.emit.groups import mig_resource_name, replica_groups

K8S_VERSION = "1.37.0"


def documents(files: dict[str, str], prefix: str = "kubernetes/") -> list[tuple[str, dict]]:
    return [
        (path, doc)
        for path, text in files.items()
        if path.startswith(prefix)
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_kind(docs: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return emit_kubernetes(mixed_plan())


@pytest.fixture(scope="module")
def docs(files: dict[str, str]) -> list[tuple[str, dict]]:
    return documents(files)


def test_every_object_passes_strict_kubernetes_validate(files: dict[str, str]) -> None:
    mig_files = emit_mig_parted(mixed_plan())
    checked = 0
    for path, doc in documents(files) + documents(mig_files, prefix="mig-parted/configmap"):
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}"
            )
        checked += 1
    kinds = {d["kind"] for _, d in documents(files)}
    assert kinds == {
        "Namespace",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert checked >= 20


def test_strict_validation_catches_a_typo() -> None:
    """The validator is not a rubber stamp: an unknown field in a container fails strict validation."""
    doc = next(d for _, d in documents(emit_kubernetes(mixed_plan())) if d["kind"] == "Deployment")
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_one_deployment_per_service_slice_market_with_planned_replicas(docs: list[tuple[str, dict]]) -> None:
    plan = mixed_plan()
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    groups = replica_groups(plan)
    assert set(deployments) == {g.name for g in groups}
    # chat on H100 3g.40gb: 2 on-demand + 3 spot GPUs; on A100 3g.40gb: 1 instance x 8 GPUs x 2 slices.
    counts = {(g.service, g.engine.gpu, g.engine.slice, g.market): g.replicas for g in groups}
    assert counts[("chat", "h100-sxm-80gb", "3g.40gb", "on_demand")] == 2
    assert counts[("chat", "h100-sxm-80gb", "3g.40gb", "spot")] == 3
    assert counts[("chat", "a100-80gb-sxm", "3g.40gb", "spot")] == 16
    assert counts[("docs", "h100-sxm-80gb", "1g.10gb", "spot")] == 6
    assert counts[("docs", "l4-24gb", "whole", "on_demand")] == 2
    for group in groups:
        assert deployments[group.name]["spec"]["replicas"] == group.replicas
    total = sum(d["spec"]["replicas"] for d in deployments.values())
    per_gpu = sum(len(g.gpu_layout.replicas) * g.instances * g.gpus_per_instance for g in plan.node_groups)
    assert total == per_gpu


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_mig_resources_under_mixed_strategy_and_whole_gpus(docs: list[tuple[str, dict]]) -> None:
    for d in by_kind(docs, "Deployment"):
        slice_name = d["metadata"]["labels"]["vlmopt.io/slice"]
        resources = _container(d)["resources"]
        expected = "nvidia.com/gpu" if slice_name == "whole" else mig_resource_name(slice_name)
        assert expected in ("nvidia.com/gpu", f"nvidia.com/mig-{slice_name}")
        assert resources["limits"][expected] == "1"
        assert resources["requests"][expected] == "1"
        gpu_keys = [k for k in resources["limits"] if k.startswith("nvidia.com/")]
        assert gpu_keys == [expected], "exactly one GPU resource: one replica per slice, TP=1 on MIG"


def test_node_affinity_matches_node_pools_and_mig_parted_configs(files: dict[str, str], docs) -> None:
    plan = mixed_plan()
    mig = yaml.safe_load(emit_mig_parted(plan)["mig-parted/config.yaml"])
    hints = yaml.safe_load(files["cluster/node-pools.yaml"])["node_pools"]
    pool_labels = [p["labels"] for p in hints]
    for d in by_kind(docs, "Deployment"):
        terms = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        exprs = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
        # Some node pool satisfies every expression: the pods can be scheduled.
        assert any(all(labels.get(k) in vals for k, vals in exprs.items()) for labels in pool_labels), d["metadata"]
        if "nvidia.com/mig.config" in exprs:
            assert set(exprs["nvidia.com/mig.config"]) <= set(mig["mig-configs"])
        market = d["metadata"]["labels"]["vlmopt.io/market"]
        assert exprs["vlmopt.io/market"] == [market]


def test_spot_pods_tolerate_the_spot_taint_and_on_demand_pods_do_not(docs) -> None:
    for d in by_kind(docs, "Deployment"):
        keys = {t["key"] for t in d["spec"]["template"]["spec"]["tolerations"]}
        if d["metadata"]["labels"]["vlmopt.io/market"] == "spot":
            assert "vlmopt.io/spot" in keys
        else:
            assert "vlmopt.io/spot" not in keys


def test_probes_security_and_secrets_by_reference(docs) -> None:
    for d in by_kind(docs, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = _container(d)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e for e in c["env"]}
        for name in ("HF_TOKEN", "VLLM_API_KEY"):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"]["name"].startswith("vlmopt-")
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/models", "/dev/shm", "/tmp"} <= mounts


def test_mig_pods_pin_batching_and_memory_flags(docs) -> None:
    for d in by_kind(docs, "Deployment"):
        args = _container(d)["args"]
        if d["metadata"]["labels"]["vlmopt.io/slice"] != "whole":
            for flag in ("--gpu-memory-utilization", "--max-num-seqs", "--max-num-batched-tokens"):
                assert flag in args, (d["metadata"]["name"], flag)
        assert "--limit-mm-per-prompt" in args
        assert "compressed-tensors" not in args  # auto-detected from the checkpoint
        # local model folders are read from the model volume; hub ids stay ids
        model = args[args.index("--model") + 1]
        assert model.startswith("/models/") or model.count("/") == 1


def test_hpa_scales_on_the_vllm_queue_and_pdb_and_service_select_the_pods(docs) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert hpa["spec"]["minReplicas"] == target["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
        metric = hpa["spec"]["metrics"][0]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            d for d in deployments.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
    for svc in by_kind(docs, "Service"):
        matched = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert {d["metadata"]["labels"]["vlmopt.io/service"] for d in matched} == {svc["metadata"]["name"]}
        assert len(matched) >= 2  # spot and on-demand groups behind one Service


def test_prometheus_adapter_renames_the_queue_metric_the_hpa_reads(files) -> None:
    values = yaml.safe_load(files["cluster/prometheus-adapter-values.yaml"])
    rule = values["rules"]["custom"][0]
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting")
    assert rule["name"]["as"] == "vllm_num_requests_waiting"


def test_whole_gpu_plan_requests_nvidia_gpu_only() -> None:
    docs = documents(emit_kubernetes(whole_gpu_only_plan()))
    for d in by_kind(docs, "Deployment"):
        limits = _container(d)["resources"]["limits"]
        assert not any(k.startswith("nvidia.com/mig-") for k in limits)
        assert limits["nvidia.com/gpu"] == "1"
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_media_extension_profile_uses_the_plugins_resource_spelling() -> None:
    assert mig_resource_name("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    assert mig_resource_name("3g.40gb") == "nvidia.com/mig-3g.40gb"
