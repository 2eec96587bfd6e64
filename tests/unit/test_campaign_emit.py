"""A campaign's Kubernetes files as a cluster reads them: every object passes kubernetes-validate strict, the
placement check admits every Job on the node pools the campaign defines (and catches broken ones), and each Job
places, sizes, fetches weights and references secrets with the deploy bundle's own builders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.unit.bundle_fixtures import emit
from tests.unit.campaign_fixtures import documents, jobs, make
from tests.unit.plan_fixtures import mixed_plan
from vlmopt.campaign import command as cmd
from vlmopt.emit.placement import check_placement
from vlmopt.hw.catalog import load_gpu_catalog

K8S_VERSION = "1.37.0"
CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "storage.k8s.io/v1")

VARIANTS = {
    "aws-mig-and-whole-bucket": {},
    "gcp-spot": {"cloud": "gcp", "region": "us-east4", "market": "spot", "targets": ["h100-sxm-80gb"]},
    "fleet-pvc-models-map": {
        "cloud": None, "region": None, "targets": ["a100-40gb:2g.10gb", "a100-40gb"], "results": "pvc:bench-results",
        "settings_models": True},
    "aws-shared-storage": {"storage": {"mode": "shared", "efs_file_system_id": "fs-0123456789abcdef0"}},
}


def _make(tmp_path: Path, variant: str):
    from tests.unit.campaign_fixtures import settings

    fields = dict(VARIANTS[variant])
    storage = fields.pop("storage", {})
    models = {f"variants/qwen2.5-vl-3b/{v}": f"Org/qwen-{v}" for v in ("bf16", "fp8", "awq")} \
        if fields.pop("settings_models", False) else {}
    return make(tmp_path, settings=settings(storage=storage, models=models), **fields)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_object_passes_strict_kubernetes_validate_and_places(tmp_path: Path, variant: str) -> None:
    campaign = _make(tmp_path, variant)
    checked = 0
    for path, doc in documents(campaign.files):
        if doc["apiVersion"] not in CORE_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path}: {doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        checked += 1
    assert len(jobs(campaign.files)) == len(campaign.manifest.jobs) >= 3
    assert checked >= len(campaign.manifest.jobs) + 2
    errors = [f for f in check_placement(campaign.files, load_gpu_catalog()) if f.severity == "error"]
    assert errors == []


def test_strict_validation_catches_a_typo_in_a_job(tmp_path: Path) -> None:
    job = next(iter(jobs(_make(tmp_path, "aws-mig-and-whole-bucket").files).values()))
    job["spec"]["template"]["spec"]["containers"][0]["args_"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_mig_job_requests_the_slice_and_selects_platform_labels_only(tmp_path: Path) -> None:
    campaign = _make(tmp_path, "aws-mig-and-whole-bucket")
    job = jobs(campaign.files)["qwen-c1-fp8-h100-sxm-80gb-3g-40gb"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/mig-3g.40gb"] == "1"
    assert container["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "1"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    # GFD's product label and the node group's capacity label; a slice of any layout will do (no mig.config term)
    assert keys == {"nvidia.com/gpu.product", "eks.amazonaws.com/capacityType", "karpenter.sh/capacity-type"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"  # the bundle's MIG allocator setting
    pools = yaml.safe_load(campaign.files["clusters/aws-us-east-1/node-pools/eksctl-nodegroups.yaml"])
    mig_pool = next(g for g in pools["managedNodeGroups"] if "3g" in g["name"])
    # three variants on 3g.40gb, two slices per H100: two nodes at most, none while nothing waits
    assert (mig_pool["minSize"], mig_pool["maxSize"]) == (0, 2)
    assert mig_pool["labels"]["nvidia.com/mig.config"] == "vlmopt-h100-sxm-80gb-2x3g.40gb"


def test_job_runs_the_benchmark_command_with_the_users_options(tmp_path: Path) -> None:
    campaign = _make(tmp_path, "aws-mig-and-whole-bucket")
    job = jobs(campaign.files)["qwen-c1-awq-l4-24gb"]
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", f"{cmd.INPUTS_MOUNT}/{cmd.WRAPPER_FILE}"]
    argv = container["args"]
    assert argv[:5] == ["vlmopt", "benchmark", "$(VLMOPT_INPUTS_DIR)/manifest.json", "--variant", "awq"]
    assert argv[5:-3] == ["--concurrency", "1,4,16", "--num-prompts", "64", "--slo",
                          "ttft_p95_ms=500,tpot_p95_ms=50", "--max-num-seqs", "64",
                          "--server-arg=--max-num-batched-tokens=8192"]
    assert argv[-3:] == ["--out", "$(VLMOPT_JOB_DIR)/profiles", "--resume"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLMOPT_JOB_DIR"] == "/results/qwen-c1/qwen-c1-awq-l4-24gb"
    assert env["VLMOPT_SERVE_PYTHON"] == "/usr/bin/python3" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLMOPT_CAMPAIGN_JOB"] == "qwen-c1/qwen-c1-awq-l4-24gb"
    assert "VLLM_API_KEY" not in env  # the server listens on the pod's loopback only
    # retries resume; bad input is not retried; preemption does not count; a stuck pod ends at the deadline
    assert spec["backoffLimit"] == 2 and spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "benchmark", "operator": "In",
                                                             "values": [2]}}
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    estimate = next(j for j in campaign.manifest.jobs if j.name == "qwen-c1-awq-l4-24gb").estimate
    run_s = estimate.startup_s + estimate.points * estimate.point_s
    assert spec["activeDeadlineSeconds"] >= 1800 + 3 * 2 * run_s
    assert spec["ttlSecondsAfterFinished"] == 7 * 24 * 3600


def test_bucket_results_come_from_a_sidecar_with_the_bundles_cli_image(tmp_path: Path) -> None:
    pod = jobs(_make(tmp_path, "aws-mig-and-whole-bucket").files)["qwen-c1-fp8-l4-24gb"]["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}
    sidecar = init["results-sync"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["image"].startswith("public.ecr.aws/aws-cli/aws-cli")
    script = sidecar["command"][2].replace("$$", "$")  # the kubelet's unescaping
    assert "aws s3 sync --no-progress /results/qwen-c1/qwen-c1-fp8-l4-24gb " \
           "s3://vlmopt-test-results/campaigns/qwen-c1/qwen-c1-fp8-l4-24gb" in script
    assert "trap 'sync_now; exit 0' TERM" in script and "wait $!" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)
    restore = init["results-restore"]["command"][2]
    assert "s3://vlmopt-test-results/campaigns/qwen-c1/qwen-c1-fp8-l4-24gb /results/qwen-c1/" in restore
    assert pod["volumes"][-1] == {"name": "results", "emptyDir": {"sizeLimit": "10Gi"}}


def test_pvc_results_mount_the_claim_and_a_reader_pod_is_emitted(tmp_path: Path) -> None:
    campaign = _make(tmp_path, "fleet-pvc-models-map")
    pod = next(iter(jobs(campaign.files).values()))["spec"]["template"]["spec"]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "bench-results"}} in pod["volumes"]
    assert [c["name"] for c in pod["initContainers"]] == ["weights"]
    reader = yaml.safe_load(campaign.files["clusters/fleet/kubernetes/results-reader.yaml"].split("---", 1)[1])
    assert reader["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "bench-results", "readOnly": True}


def test_jobs_are_built_like_the_bundles_pods(tmp_path: Path) -> None:
    """Same checkpoint, GPU and market as a deploy bundle Deployment: the Job fetches weights with the same init
    step, tolerates the same taints, selects the same labels (minus the mig.config term) and references the same
    secret; only the container's command differs."""
    campaign = make(tmp_path, targets=["l4-24gb"], variants=["fp8"])
    job = jobs(campaign.files)["qwen-c1-fp8-l4-24gb"]["spec"]["template"]["spec"]
    bundle = emit(mixed_plan())
    deployment = next(d for _, d in documents(bundle) if d["kind"] == "Deployment"
                      and d["metadata"]["labels"]["vlmopt.io/slice"] == "whole")["spec"]["template"]["spec"]
    assert job["initContainers"][0] == deployment["initContainers"][0]
    assert job["tolerations"] == deployment["tolerations"]
    assert job["affinity"] == deployment["affinity"]
    assert job["securityContext"] == deployment["securityContext"]
    assert job["containers"][0]["securityContext"] == deployment["containers"][0]["securityContext"]
    models = next(v for v in job["volumes"] if v["name"] == "models")["ephemeral"]["volumeClaimTemplate"]["spec"]
    bundled = next(v for v in deployment["volumes"] if v["name"] == "models")["ephemeral"]["volumeClaimTemplate"]
    assert models["storageClassName"] == bundled["spec"]["storageClassName"] == "vlmopt-rwo"
    secret = next(e for e in job["initContainers"][0]["env"] if e["name"] == "HF_TOKEN")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "vlmopt-hf-token", "key": "token", "optional": True}


def test_inputs_configmap_carries_the_manifest_with_job_paths(tmp_path: Path) -> None:
    campaign = _make(tmp_path, "aws-mig-and-whole-bucket")
    (cm,) = [d for _, d in documents(campaign.files) if d["kind"] == "ConfigMap" and "inputs" in d["metadata"]["name"]]
    manifest = json.loads(cm["data"]["manifest.json"])
    assert {v["name"]: v["path"] for v in manifest["variants"]} == {
        "bf16": "../../models/qwen2.5-vl-3b/bf16", "fp8": "../../models/qwen2.5-vl-3b/fp8",
        "awq": "../../models/qwen2.5-vl-3b/awq"}
    assert manifest["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert cm["data"][cmd.WRAPPER_FILE] == cmd.wrapper_script()
    init = jobs(campaign.files)["qwen-c1-fp8-l4-24gb"]["spec"]["template"]["spec"]["initContainers"][0]
    assert "/models/qwen2.5-vl-3b/fp8" in init["command"][2]  # where the manifest says fp8 is


# -- the placement check on Jobs: each defect is caught ----------------------------------------------------------

def _broken(tmp_path: Path, change) -> list[str]:
    campaign = _make(tmp_path, "aws-mig-and-whole-bucket")
    files = dict(campaign.files)
    path = next(p for p in files if p.endswith("qwen-c1-fp8-h100-sxm-80gb-3g-40gb.yaml"))
    header, body = files[path].split("---\n", 1)
    job = yaml.safe_load(body)
    change(job, files)
    files[path] = header + "---\n" + yaml.safe_dump(job)
    return [f.message for f in check_placement(files, load_gpu_catalog()) if f.severity == "error"]


def test_placement_catches_a_slice_no_pool_offers(tmp_path: Path) -> None:
    def change(job, files):
        resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
        for part in ("requests", "limits"):
            resources[part]["nvidia.com/mig-2g.20gb"] = resources[part].pop("nvidia.com/mig-3g.40gb")

    assert any("admit" in m for m in _broken(tmp_path, change))


def test_placement_catches_a_missing_inputs_configmap(tmp_path: Path) -> None:
    def change(job, files):
        for vol in job["spec"]["template"]["spec"]["volumes"]:
            if vol["name"] == "inputs":
                vol["configMap"]["name"] = "someone-elses"

    assert any("ConfigMap someone-elses" in m for m in _broken(tmp_path, change))


def test_placement_catches_pods_that_overfill_a_node(tmp_path: Path) -> None:
    def change(job, files):
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "60"

    assert any("full node" in m for m in _broken(tmp_path, change))


def test_placement_catches_pod_failure_policy_with_retrying_pods(tmp_path: Path) -> None:
    def change(job, files):
        job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"

    assert any("restartPolicy Never" in m for m in _broken(tmp_path, change))
