"""Node pools as real definitions, per cluster: an eksctl ClusterConfig (managed node groups) on AWS, `gcloud
container node-pools create` commands on GKE, and for a fleet (no cloud) the labels to put on existing nodes.
Plus the GPU operator's Helm values and the mig-parted ConfigMap its mig-manager reads.

Each pool carries the labels and taints pods select on from its definition, so nodes a pool replaces (spot) come
back with them. docs/deploy-bundle.md#node-pools.
"""

from __future__ import annotations

import shlex
from typing import Any

from vlmopt.schemas import GpuCatalog, Plan

from ._common import GENERATED_BY, EmitError, dump_yaml, dump_yaml_documents, label_value
from .clusters import Cluster, NodePool
from .groups import is_mig_slice, mig_resource_name
from .instances import GKE_ACCELERATORS
from .mig_parted import ALL_DISABLED, build_mig_parted_config, node_group_mig_config
from .platform import GKE_NO_DEFAULT_PLUGIN, GPU_TAINT, MIG_CONFIG, NODE_GROUP_LABEL, SPOT_TAINT

MIG_CONFIGMAP = "vlmopt-mig-parted-config"
CA_TAG = "k8s.io/cluster-autoscaler/node-template"
ROOT_VOLUME_GIB = 200  # image layers (the vLLM image is ~10 GiB) and per-pod emptyDirs


def pool_labels(pool: NodePool) -> dict[str, str]:
    """Labels the pool definition sets on its nodes (the platform adds the rest: platform.py)."""
    return {NODE_GROUP_LABEL: label_value(pool.node_group.name), MIG_CONFIG: node_group_mig_config(pool.node_group)}


def pool_taints(cluster: Cluster, pool: NodePool) -> list[dict[str, str]]:
    taints = [] if cluster.cloud == "gcp" else [dict(GPU_TAINT)]  # GKE taints GPU pools itself
    if pool.node_group.market == "spot" and cluster.cloud in SPOT_TAINT:
        taints.append(dict(SPOT_TAINT[cluster.cloud]))
    return taints


def pool_gpu_resources(pool: NodePool) -> dict[str, int]:
    """Extended resources one node of the pool advertises (device plugin, mixed strategy)."""
    ng = pool.node_group
    if ng.gpu_layout.mig_layout is None:
        return {"nvidia.com/gpu": ng.gpus_per_instance}
    out: dict[str, int] = {}
    for profile in ng.gpu_layout.mig_layout:
        name = mig_resource_name(profile)
        out[name] = out.get(name, 0) + ng.gpus_per_instance
    return out


def eksctl_config(cluster: Cluster, cluster_name: str) -> dict[str, Any]:
    """eksctl `ClusterConfig` with one managed node group per plan node group (`eksctl create nodegroup -f`)."""
    groups = []
    for pool in cluster.pools:
        ng = pool.node_group
        if not ng.instance_type:
            raise EmitError(f"node group {ng.name}: AWS node group without an instance_type")
        labels = pool_labels(pool)
        taints = pool_taints(cluster, pool)
        # Cluster Autoscaler builds a node template from these when it scales a group up from zero; it cannot
        # know MIG resources otherwise.
        tags = {f"{CA_TAG}/label/{k}": v for k, v in labels.items()}
        tags |= {f"{CA_TAG}/resources/{k}": str(v) for k, v in pool_gpu_resources(pool).items()}
        tags |= {f"{CA_TAG}/taint/{t['key']}": f"{t['value']}:{t['effect']}" for t in taints}
        group: dict[str, Any] = {
            "name": pool.name,
            "amiFamily": "AmazonLinux2023",
            "instanceTypes" if ng.market == "spot" else "instanceType": (
                [ng.instance_type] if ng.market == "spot" else ng.instance_type
            ),
            "spot": ng.market == "spot",
            "minSize": pool.min_nodes,
            "desiredCapacity": pool.min_nodes,
            "maxSize": pool.max_nodes,
            "volumeSize": ROOT_VOLUME_GIB,
            "labels": labels,
            "taints": taints,
            "tags": tags,
            "propagateASGTags": True,
            "iam": {"withAddonPolicies": {"autoScaler": True, "ebs": True, "efs": True}},
        }
        groups.append(group)
    return {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": cluster_name, "region": cluster.region},
        "managedNodeGroups": groups,
    }


def gke_commands(cluster: Cluster, cluster_name: str, project: str | None) -> list[list[str]]:
    """One `gcloud container node-pools create` argument list per node group."""
    commands = []
    for pool in cluster.pools:
        ng = pool.node_group
        accelerator = GKE_ACCELERATORS.get(ng.gpu)
        if accelerator is None:
            raise EmitError(f"node group {ng.name}: no GKE accelerator type known for GPU {ng.gpu}")
        if not ng.instance_type:
            raise EmitError(f"node group {ng.name}: GKE node group without a machine type")
        labels = {**pool_labels(pool), GKE_NO_DEFAULT_PLUGIN: "true"}
        taints = pool_taints(cluster, pool)
        args = ["gcloud", "container", "node-pools", "create", pool.name]
        if project:
            args.append(f"--project={project}")
        args += [
            f"--cluster={cluster_name}",
            f"--location={cluster.region}",
            f"--machine-type={ng.instance_type}",
            # The GPU operator installs the driver: GKE's installer stays off (gpu-driver-version=disabled).
            f"--accelerator=type={accelerator},count={ng.gpus_per_instance},gpu-driver-version=disabled",
            "--image-type=UBUNTU_CONTAINERD",
            f"--disk-size={ROOT_VOLUME_GIB}",
            "--num-nodes=1",
            "--enable-autoscaling",
            f"--total-min-nodes={pool.min_nodes}",
            f"--total-max-nodes={pool.max_nodes}",
            # Spot: take capacity in whichever zone has it; on-demand: spread evenly.
            f"--location-policy={'ANY' if ng.market == 'spot' else 'BALANCED'}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
        ]
        if taints:
            args.append("--node-taints=" + ",".join(f"{t['key']}={t['value']}:{t['effect']}" for t in taints))
        if ng.market == "spot":
            args.append("--spot")
        commands.append(args)
    return commands


def gke_script(commands: list[list[str]], plan_name: str) -> str:
    lines = [
        "#!/bin/sh",
        f"# {GENERATED_BY} ({plan_name}): GKE node pools, one per node group of the plan.",
        "# --num-nodes is per zone; the autoscaler keeps the total between --total-min-nodes and --total-max-nodes.",
        "set -eu",
    ]
    lines += [shlex.join(c) for c in commands]
    return "\n".join(lines) + "\n"


def gpu_operator_values(cluster: Cluster) -> dict[str, Any]:
    """GPU operator Helm values: mixed MIG strategy, mig-manager reading the bundle's ConfigMap. On EKS the
    accelerated AMI already ships the driver and container toolkit; on GKE (Ubuntu nodes) the operator installs them
    (https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/amazon-eks.html, .../google-gke.html)."""
    on_eks = cluster.cloud == "aws"
    return {
        "mig": {"strategy": "mixed"},
        "migManager": {"enabled": True, "config": {"name": MIG_CONFIGMAP, "default": ALL_DISABLED}},
        "driver": {"enabled": not on_eks},
        "toolkit": {"enabled": not on_eks},
    }


def fleet_labels(cluster: Cluster) -> dict[str, Any]:
    """No node pool API on a fleet: the labels to put on the existing nodes of each node group, once."""
    pools = []
    for pool in cluster.pools:
        labels = pool_labels(pool)
        pools.append(
            {
                "node_group": pool.node_group.name,
                "gpu": pool.node_group.gpu,
                "nodes": pool.node_group.instances,
                "gpus_per_node": pool.node_group.gpus_per_instance,
                "labels": labels,
                "command": "kubectl label node <node> "
                + " ".join(f"{k}={v}" for k, v in labels.items())
                + " --overwrite",
            }
        )
    return {"node_pools": pools}


def emit_cluster_node_pools(cluster: Cluster, plan: Plan, catalog: GpuCatalog, settings) -> dict[str, str]:
    folder = cluster.folder
    files: dict[str, str] = {}
    if cluster.cloud == "aws":
        files[f"{folder}/node-pools/eksctl-nodegroups.yaml"] = dump_yaml(
            eksctl_config(cluster, settings.cluster_name),
            header=[f"{GENERATED_BY} ({plan.name}): eksctl create nodegroup -f <this file>"],
        )
    elif cluster.cloud == "gcp":
        files[f"{folder}/node-pools/gke-node-pools.sh"] = gke_script(
            gke_commands(cluster, settings.cluster_name, settings.gcp_project), plan.name
        )
    else:
        files[f"{folder}/node-pools/node-labels.yaml"] = dump_yaml(
            fleet_labels(cluster), header=[f"{GENERATED_BY}: label existing nodes (no node pool API on a fleet)"]
        )
    files[f"{folder}/gpu-operator-values.yaml"] = dump_yaml(
        gpu_operator_values(cluster),
        header=[f"{GENERATED_BY}: helm install gpu-operator nvidia/gpu-operator -n gpu-operator -f <this file>"],
    )
    sub_plan = plan.model_copy(update={"node_groups": [p.node_group for p in cluster.pools]})
    config, _ = build_mig_parted_config(sub_plan, catalog)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": MIG_CONFIGMAP,
            "namespace": settings.gpu_operator_namespace,
            "labels": {"app.kubernetes.io/part-of": "vlmopt", "vlmopt.io/plan": label_value(plan.name)},
        },
        "data": {"config.yaml": dump_yaml(config)},
    }
    files[f"{folder}/mig-parted-configmap.yaml"] = dump_yaml_documents(
        [configmap], header=[f"{GENERATED_BY}: kubectl apply -f <this file> (before the GPU operator)"]
    )
    return files


def has_mig(cluster: Cluster) -> bool:
    return any(is_mig_slice(r.slice) for p in cluster.pools for r in p.node_group.gpu_layout.replicas)
