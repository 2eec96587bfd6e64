"""Labels and taints GPU nodes carry without anyone running `kubectl label`: from the cloud's node pool (capacity
type, instance type, pool name), from NVIDIA GPU Feature Discovery (GPU product) and from the node pool definition
the bundle emits (mig-parted config name, vlmopt's spot taint). Pods select only on these, so a replaced spot node
comes back with everything they need.

Sources:
- EKS managed node groups label nodes `eks.amazonaws.com/capacityType` = ON_DEMAND | SPOT
  (https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html); Karpenter uses
  `karpenter.sh/capacity-type` = on-demand | spot (https://karpenter.sh/docs/concepts/scheduling/).
- GKE labels Spot nodes `cloud.google.com/gke-spot=true`
  (https://cloud.google.com/kubernetes-engine/docs/how-to/spot-vms) and GPU nodes `cloud.google.com/gke-accelerator`,
  and taints GPU node pools `nvidia.com/gpu=present:NoSchedule`
  (https://cloud.google.com/kubernetes-engine/docs/how-to/gpus).
- GPU Feature Discovery labels `nvidia.com/gpu.product` with the NVML product name, spaces replaced by '-'; under the
  mixed MIG strategy the full-GPU product is kept and each MIG profile gets its own `nvidia.com/mig-<p>.*` labels
  (https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md).
- Well-known `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone`
  (https://kubernetes.io/docs/reference/labels-annotations-taints/).
"""

from __future__ import annotations

from typing import Any

from vlmopt.schemas import GpuSpec

GPU_PRODUCT = "nvidia.com/gpu.product"
MIG_CONFIG = "nvidia.com/mig.config"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
ZONE = "topology.kubernetes.io/zone"
EKS_CAPACITY = "eks.amazonaws.com/capacityType"
KARPENTER_CAPACITY = "karpenter.sh/capacity-type"
GKE_SPOT = "cloud.google.com/gke-spot"
GKE_NODEPOOL = "cloud.google.com/gke-nodepool"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
NODE_GROUP_LABEL = "vlmopt.io/node-group"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
SPOT_TAINT = {"aws": {"key": "vlmopt.io/spot", "value": "true", "effect": "NoSchedule"},
              "gcp": {"key": GKE_SPOT, "value": "true", "effect": "NoSchedule"}}
# GKE's own device plugin and driver installer stand aside for the GPU operator's
# (https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/google-gke.html).
GKE_NO_DEFAULT_PLUGIN = "gke-no-default-nvidia-gpu-device-plugin"


def gfd_product(name: str) -> str:
    return name.replace(" ", "-")


def gpu_products(gpu: GpuSpec) -> list[str]:
    """Every `nvidia.com/gpu.product` value GFD may report for this catalog GPU."""
    return sorted({gfd_product(n) for n in gpu.names})


def capacity_terms(cloud: str | None, market: str) -> list[list[dict[str, Any]]]:
    """Node-selector requirement sets (ORed) that pick the market's nodes on this cloud's node provisioners."""
    spot = market == "spot"
    if cloud == "aws":
        return [
            [{"key": EKS_CAPACITY, "operator": "In", "values": ["SPOT" if spot else "ON_DEMAND"]}],
            [{"key": KARPENTER_CAPACITY, "operator": "In", "values": ["spot" if spot else "on-demand"]}],
        ]
    if cloud == "gcp":
        if spot:
            return [[{"key": GKE_SPOT, "operator": "In", "values": ["true"]}]]
        return [[{"key": GKE_SPOT, "operator": "DoesNotExist"}]]
    return [[]]  # fleet / unknown cloud: nodes have no capacity-type label; spot is not planned there


def pool_platform_labels(cloud: str | None, pool_name: str, instance_type: str | None, spot: bool,
                         gpu_product: str, gke_accelerator: str | None = None) -> dict[str, str]:
    """Labels the platform (cloud + GFD) puts on a node of the pool; the pool definition adds its own."""
    labels = {GPU_PRODUCT: gpu_product}
    if instance_type:
        labels[INSTANCE_TYPE] = instance_type
    if cloud == "aws":
        labels[EKS_CAPACITY] = "SPOT" if spot else "ON_DEMAND"
        labels["eks.amazonaws.com/nodegroup"] = pool_name
    elif cloud == "gcp":
        labels[GKE_NODEPOOL] = pool_name
        if gke_accelerator:
            labels[GKE_ACCELERATOR] = gke_accelerator
        if spot:
            labels[GKE_SPOT] = "true"
    return labels


def pool_platform_taints(cloud: str | None) -> list[dict[str, str]]:
    """Taints the platform adds by itself (GKE on GPU pools)."""
    return [dict(GPU_TAINT)] if cloud == "gcp" else []
