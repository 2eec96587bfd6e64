"""What a node of an instance type offers pods: capacity from a sourced table (vlmopt/data/instance_types.yaml), minus
the reservations each managed Kubernetes documents, minus what the GPU node's daemonsets take.

- EKS (AL2/AL2023 EKS-optimized AMIs, awslabs/amazon-eks-ami): kube-reserved CPU = 6 % of the first core, 1 % of
  the second, 0.5 % of the third and fourth, 0.25 % of every further core; kube-reserved memory = 255 MiB + 11 MiB x
  max pods (max pods from eni-max-pods.txt); eviction threshold memory.available < 100 MiB; no system-reserved.
- GKE (https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes): the same CPU rule; memory 25 % of
  the first 4 GiB, 20 % of the next 4, 10 % of the next 8, 6 % of the next 112, 2 % above 128 GiB; eviction 100 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from vlmopt.paths import data_file
from vlmopt.schemas.common import StrictModel

from ._common import EmitError

MIB = 1 / 1024


class InstanceType(StrictModel):
    cloud: str
    instance_type: str
    vcpus: int
    memory_gib: float
    gpus: int
    gpu: str
    max_pods: int | None = None


class InstanceTable(StrictModel):
    schema_version: int = 1
    instance_types: list[InstanceType]


@dataclass(frozen=True)
class Allocatable:
    """Per node: what the kubelet reports as allocatable, and what is left for vLLM pods after daemonsets."""

    instance: InstanceType
    cpu: float
    memory_gib: float
    for_pods_cpu: float
    for_pods_memory_gib: float
    source: str


def instance_table() -> dict[tuple[str, str], InstanceType]:
    # a user's --data-dir/VLMOPT_DATA_DIR copy wins, as for every bundled table
    return _load_instance_table(data_file("instance_types.yaml"))


@cache
def _load_instance_table(path: Path) -> dict[tuple[str, str], InstanceType]:
    text = path.read_text()
    table = InstanceTable.model_validate(yaml.safe_load(text))
    return {(row.cloud, row.instance_type): row for row in table.instance_types}


def lookup(cloud: str | None, instance_type: str | None) -> InstanceType | None:
    if not cloud or not instance_type:
        return None
    return instance_table().get((cloud.lower(), instance_type))


def reserved_cpu(vcpus: float) -> float:
    """Cores the kubelet keeps (the rule EKS and GKE share)."""
    tiers = ((1, 0.06), (1, 0.01), (2, 0.005))
    left, reserved = vcpus, 0.0
    for cores, share in tiers:
        used = min(left, cores)
        reserved += used * share
        left -= used
    return reserved + max(left, 0) * 0.0025


def gke_reserved_memory_gib(memory_gib: float) -> float:
    if memory_gib < 1:
        return 255 * MIB
    tiers = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06))
    left, reserved = memory_gib, 0.0
    for size, share in tiers:
        used = min(left, size)
        reserved += used * share
        left -= used
    return reserved + max(left, 0) * 0.02


def eks_max_pods(instance: InstanceType) -> int:
    """eni-max-pods value, capped as EKS recommends: 110 below 30 vCPUs, 250 otherwise."""
    cap = 110 if instance.vcpus < 30 else 250
    return min(instance.max_pods or cap, cap)


def eks_reserved_memory_gib(instance: InstanceType) -> float:
    return (255 + 11 * eks_max_pods(instance)) * MIB


EVICTION_GIB = 100 * MIB


def allocatable(
    cloud: str | None, instance_type: str | None, reserve_cpu: float, reserve_memory_gib: float
) -> Allocatable | None:
    """None when the instance type is unknown (fleet nodes, or a type missing from the table)."""
    instance = lookup(cloud, instance_type)
    if instance is None:
        return None
    cpu = instance.vcpus - reserved_cpu(instance.vcpus)
    if instance.cloud == "aws":
        memory = instance.memory_gib - eks_reserved_memory_gib(instance) - EVICTION_GIB
        source = "EKS AMI kube-reserved (255 MiB + 11 MiB x max pods) + 100 MiB eviction"
    elif instance.cloud == "gcp":
        memory = instance.memory_gib - gke_reserved_memory_gib(instance.memory_gib) - EVICTION_GIB
        source = "GKE memory/CPU reservation tiers + 100 MiB eviction"
    else:  # pragma: no cover - the table only has aws and gcp rows
        raise EmitError(f"no reservation rule for cloud {instance.cloud}")
    return Allocatable(
        instance=instance,
        cpu=cpu,
        memory_gib=memory,
        for_pods_cpu=cpu - reserve_cpu,
        for_pods_memory_gib=memory - reserve_memory_gib,
        source=source,
    )


# GKE accelerator type per catalog GPU id (https://cloud.google.com/compute/docs/gpus); used in node-pool commands.
GKE_ACCELERATORS = {
    "t4-16gb": "nvidia-tesla-t4",
    "l4-24gb": "nvidia-l4",
    "a100-40gb": "nvidia-tesla-a100",
    "a100-80gb-sxm": "nvidia-a100-80gb",
    "h100-sxm-80gb": "nvidia-h100-80gb",
    "h100-mega-80gb": "nvidia-h100-mega-80gb",
    "h200-sxm-141gb": "nvidia-h200-141gb",
    "b200-180gb": "nvidia-b200",
}
