"""Node pool definitions: GKE `gcloud container node-pools create` commands checked by gcloud's own argument parser
(offline: a command it accepts stops only at authentication), the script is valid `sh` that runs exactly those
argument lists, and the eksctl ClusterConfig carries the labels, taints, sizes and autoscaler hints pods need."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.bundle_fixtures import emit
from tests.unit.plan_fixtures import multi_cloud_plan, require_tool
from vlmopt.emit.clusters import build_clusters
from vlmopt.emit.node_pools import gke_commands

GKE_SCRIPT = "clusters/gcp-us-east4/node-pools/gke-node-pools.sh"
EKSCTL = "clusters/aws-us-east-1/node-pools/eksctl-nodegroups.yaml"


def gcloud(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),  # a fresh config: no account, so nothing is ever sent
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
    }
    return subprocess.run([require_tool("gcloud"), *args[1:]], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return emit(multi_cloud_plan(), gcp_project="vlmopt-test")


def test_gke_commands_pass_gclouds_parser(files: dict[str, str], tmp_path: Path) -> None:
    lines = [line for line in files[GKE_SCRIPT].splitlines() if line.startswith("gcloud ")]
    assert len(lines) == 1
    result = gcloud(shlex.split(lines[0]), tmp_path)
    # 1 + "no active account": parsed and validated, stopped before any API call; 2 would be a usage error.
    assert result.returncode == 1 and "active account" in result.stderr, result.stderr[-2000:]


def test_gclouds_parser_rejects_a_bad_flag(files: dict[str, str], tmp_path: Path) -> None:
    line = next(line for line in files[GKE_SCRIPT].splitlines() if line.startswith("gcloud "))
    args = [a.replace("--location-policy=ANY", "--location-policy=SOMEWHERE") for a in shlex.split(line)]
    result = gcloud(args, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]


def test_gke_script_is_valid_sh_running_the_argument_lists(files: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "pools.sh"
    script.write_text(files[GKE_SCRIPT])
    assert subprocess.run([require_tool("sh"), "-n", str(script)]).returncode == 0
    stub = tmp_path / "bin" / "gcloud"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    out = subprocess.run([require_tool("sh"), str(script)], env={"PATH": f"{stub.parent}:/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    from vlmopt.schemas.deploy import DeploySettings

    cluster = next(c for c in build_clusters(multi_cloud_plan(), DeploySettings()) if c.cloud == "gcp")
    expected = gke_commands(cluster, "vlmopt", "vlmopt-test")[0][1:]
    assert out == expected
    assert "--spot" in out and "--node-taints=cloud.google.com/gke-spot=true:NoSchedule" in out
    assert any(a.startswith("--accelerator=type=nvidia-h100-80gb,count=1,gpu-driver-version=disabled") for a in out)


def test_eksctl_node_groups_carry_labels_taints_and_sizes(files: dict[str, str]) -> None:
    config = yaml.safe_load(files[EKSCTL])
    assert config["apiVersion"] == "eksctl.io/v1alpha5" and config["kind"] == "ClusterConfig"
    assert config["metadata"] == {"name": "vlmopt", "region": "us-east-1"}
    groups = {g["name"]: g for g in config["managedNodeGroups"]}
    spot = groups["h100-mig-spot"]
    assert spot["spot"] is True and spot["instanceTypes"] == ["p5.4xlarge"]
    assert spot["minSize"] == spot["desiredCapacity"] == 3 and spot["maxSize"] == 6
    assert {"key": "vlmopt.io/spot", "value": "true", "effect": "NoSchedule"} in spot["taints"]
    tags = spot["tags"]
    assert tags["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/mig-1g.10gb"] == "2"
    assert groups["l4-whole-od"]["instanceType"] == "g6.xlarge" and groups["l4-whole-od"]["spot"] is False
    assert groups["l4-whole-od"]["labels"]["nvidia.com/mig.config"] == "all-disabled"
    a100 = groups["a100-mig-spot"]
    assert a100["tags"]["k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/mig-3g.40gb"] == "16"
