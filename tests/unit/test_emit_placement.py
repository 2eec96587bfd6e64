"""The placement check reads a bundle's files the way a cluster would and says whether its pods can run: it passes
on every bundle the emitters write (several plans and settings) and catches each way a file could break placement
(each mutation below is a real mistake: a hand label, a request too big for the node, RWX on a block class, ...)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import yaml

from tests.unit.bundle_fixtures import emit
from tests.unit.plan_fixtures import mixed_plan, multi_cloud_plan, single_replica_plan, whole_gpu_only_plan
from vlmopt.emit.mig_parted import load_catalog
from vlmopt.emit.placement import check_placement

CATALOG = load_catalog()
AWS = "clusters/aws-us-east-1"
CHAT = f"{AWS}/kubernetes/service-chat.yaml"
DOCS = f"{AWS}/kubernetes/service-docs.yaml"


def errors(files: dict[str, str]) -> list[str]:
    return [f"{f.where}: {f.message}" for f in check_placement(files, CATALOG) if f.severity == "error"]


@pytest.mark.parametrize(
    ("plan", "fields"),
    [
        (mixed_plan, {}),
        (multi_cloud_plan, {}),
        (multi_cloud_plan, {"storage": {"mode": "shared", "efs_file_system_id": "fs-0123456789abcdef0"}}),
        (multi_cloud_plan, {"autoscaling": {"engine": "none"}}),
        (multi_cloud_plan, {"autoscaling": {"engine": "hpa", "max_replicas_factor": 3}}),
        (mixed_plan, {"gateway": "istio", "ab": {"service": "docs", "variant": "int8", "model": "Org/docs-int8",
                                                  "weight_percent": 25}}),
        (single_replica_plan, {}),
        (whole_gpu_only_plan, {}),
    ],
)
def test_every_emitted_bundle_places(plan: Callable, fields: dict) -> None:
    files = emit(plan(), **fields)
    assert errors(files) == []
    assert any(p.startswith("clusters/") for p in files)


def _edit(files: dict[str, str], path: str, change: Callable[[list[dict]], None]) -> dict[str, str]:
    docs = list(yaml.safe_load_all(files[path]))
    change(docs)
    return {**files, path: yaml.safe_dump_all(docs, sort_keys=False)}


def _deployment(docs: list[dict], market: str = "spot", slice_name: str | None = None) -> dict:
    return next(
        d for d in docs
        if d and d["kind"] == "Deployment" and d["metadata"]["labels"]["vlmopt.io/market"] == market
        and (slice_name is None or d["metadata"]["labels"]["vlmopt.io/slice"] == slice_name)
    )


def _pod(docs: list[dict], **kw) -> dict:
    return _deployment(docs, **kw)["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return copy.deepcopy(emit(mixed_plan()))


def test_a_hand_applied_label_places_nothing(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        terms = _pod(docs)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        for term in terms["nodeSelectorTerms"]:
            term["matchExpressions"].append({"key": "vlmopt.io/gpu", "operator": "In", "values": ["h100-sxm-80gb"]})

    assert any("no node pool" in e for e in errors(_edit(files, CHAT, change)))


def test_a_missing_spot_toleration_places_nothing(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        pod = _pod(docs)
        pod["tolerations"] = [t for t in pod["tolerations"] if t["key"] != "vlmopt.io/spot"]

    assert any("no node pool" in e for e in errors(_edit(files, CHAT, change)))


def test_requests_beyond_the_instance_are_caught(files: dict[str, str]) -> None:
    """The old bundle's 8 CPU / 32 GiB on a 4 vCPU / 16 GiB g6.xlarge."""
    def change(docs: list[dict]) -> None:
        requests = _pod(docs, market="on_demand".replace("_", "-"), slice_name="whole")["containers"][0]["resources"]
        requests["requests"].update(cpu="8", memory="32Gi")
        requests["limits"]["memory"] = "32Gi"

    found = errors(_edit(files, DOCS, change))
    assert any("l4-whole-od" in e and "a full node needs" in e for e in found), found


def test_rwx_on_a_block_storage_class_is_caught(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        volume = next(v for v in _pod(docs)["volumes"] if v["name"] == "models")
        volume["ephemeral"]["volumeClaimTemplate"]["spec"]["accessModes"] = ["ReadWriteMany"]

    assert any("ebs.csi.aws.com cannot provide" in e for e in errors(_edit(files, CHAT, change)))


def test_a_surge_without_a_free_slice_is_caught(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        _deployment(docs)["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": 0}

    assert any("never finishes" in e for e in errors(_edit(files, CHAT, change)))


def test_replicas_beside_an_autoscaler_is_caught(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        _deployment(docs)["spec"]["replicas"] = 3

    assert any("autoscaler owns the count" in e for e in errors(_edit(files, CHAT, change)))


def test_autoscaler_bounds_beyond_the_pools_are_caught(files: dict[str, str]) -> None:
    path = f"{AWS}/autoscaling/keda-scaledobjects.yaml"

    def change(docs: list[dict]) -> None:
        docs[0]["spec"]["maxReplicaCount"] = 1000

    assert any("at their maximum size" in e for e in errors(_edit(files, path, change)))

    def too_many_at_start(docs: list[dict]) -> None:
        docs[0]["spec"]["minReplicaCount"] += 5
        docs[0]["spec"]["maxReplicaCount"] += 5

    assert any("at minimum" in e for e in errors(_edit(files, path, too_many_at_start)))


def test_shutdown_mistakes_are_caught(files: dict[str, str]) -> None:
    def no_drain(docs: list[dict]) -> None:
        args = _pod(docs)["containers"][0]["args"]
        args[args.index("--shutdown-timeout") + 1] = "0"

    assert any("aborts in-flight" in e for e in errors(_edit(files, CHAT, no_drain)))

    def past_the_notice(docs: list[dict]) -> None:
        _pod(docs)["terminationGracePeriodSeconds"] = 300

    assert any("spot notice" in e for e in errors(_edit(files, CHAT, past_the_notice)))


def test_gke_spot_grace_follows_the_gke_notice() -> None:
    files = emit(multi_cloud_plan())
    path = "clusters/gcp-us-east4/kubernetes/service-chat.yaml"

    def change(docs: list[dict]) -> None:
        _pod(docs)["terminationGracePeriodSeconds"] = 110  # AWS's value: GKE gives pods 15 s

    assert any("gcp's spot notice" in e for e in errors(_edit(files, path, change)))


def test_a_node_pool_without_the_mig_label_places_nothing(files: dict[str, str]) -> None:
    path = f"{AWS}/node-pools/eksctl-nodegroups.yaml"
    config = yaml.safe_load(files[path])
    for group in config["managedNodeGroups"]:
        group["labels"].pop("nvidia.com/mig.config")
    found = errors({**files, path: yaml.safe_dump(config)})
    assert any("no node pool" in e for e in found)


def test_no_weights_step_is_caught(files: dict[str, str]) -> None:
    def change(docs: list[dict]) -> None:
        _pod(docs).pop("initContainers")

    assert any("weight download" in e for e in errors(_edit(files, CHAT, change)))
