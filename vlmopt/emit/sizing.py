"""CPU, memory, /dev/shm and API server processes per replica, from the host sizing the planner measured or
estimated (`Replica.host`) and from what the instance can give (instances.py).

Each replica on a node gets a share of the node's allocatable resources (after daemonsets) in proportion to its
GPU share: a whole GPU on an 8-GPU instance gets 1/8; a 3g slice of a 7-slice layout gets 3/7 of its GPU's share.
The request is what the replica needs (HostSizing, else the fallback rule) but never more than that share, so the
pods the plan puts on a node always fit on it together. docs/deploy-bundle.md#sizing-from-the-instance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vlmopt.schemas import NodeGroup, Replica
from vlmopt.schemas.deploy import DeploySettings

from ._common import EmitError
from .instances import allocatable

# Fallback when the plan has no HostSizing: an engine core process, one API server and tokenizer/image
# preprocessing threads (vLLM runs the engine core busy-looping on one core).
FALLBACK_CPU_WHOLE_GPU = 4.0
FALLBACK_CPU_MIG = 2.0
# Host RAM beyond the weights: CUDA context, tokenizer/processor, pinned staging buffers, the API server.
FALLBACK_HOST_OVERHEAD_GIB = 4.0
# Below this the engine, the API server and preprocessing fight for one core.
MIN_CPU = 1.0
MIN_MEMORY_GIB = 2.0


def compute_slices(slice_name: str) -> int:
    match = re.match(r"(\d+)g\.", slice_name)
    return int(match.group(1)) if match else 7


def slice_memory_gib(slice_name: str) -> float | None:
    match = re.search(r"\.(\d+)gb", slice_name)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class PodSize:
    cpu: float
    memory_gib: float  # request = limit; includes the /dev/shm tmpfs, which is charged to the pod's memory
    shm_gib: float
    api_server_count: int
    derivation: str

    @property
    def cpu_quantity(self) -> str:
        return f"{math.floor(self.cpu * 1000)}m"

    @property
    def memory_quantity(self) -> str:
        return f"{math.floor(self.memory_gib * 1024)}Mi"

    @property
    def shm_quantity(self) -> str:
        return f"{math.floor(self.shm_gib * 1024)}Mi"


def _gpu_share(group: NodeGroup, replica: Replica) -> float:
    """Share of one GPU's host resources this replica gets: by compute slices among the GPU's replicas."""
    slices = [compute_slices(r.slice) if r.slice != "whole" else 7 for r in group.gpu_layout.replicas]
    mine = compute_slices(replica.slice) if replica.slice != "whole" else 7
    return mine / sum(slices)


def _wanted(replica: Replica, settings: DeploySettings) -> tuple[float, float, int, str]:
    host = replica.host
    weights = (replica.memory_gib or {}).get("weights")
    if weights is None:
        size = slice_memory_gib(replica.slice)
        weights = size / 2 if size else 8.0
    if host is not None:
        memory = host.memory_gib if host.memory_gib is not None else weights + FALLBACK_HOST_OVERHEAD_GIB
        return host.cpu_cores, memory, host.api_server_count, f"host sizing: {host.provenance.label()}"
    cpu = FALLBACK_CPU_WHOLE_GPU if replica.slice == "whole" else FALLBACK_CPU_MIG
    how = (
        f"fallback rule (plan has no host sizing): {cpu:g} cores, weights {weights:g} GiB + "
        f"{FALLBACK_HOST_OVERHEAD_GIB:g} GiB"
    )
    return cpu, weights + FALLBACK_HOST_OVERHEAD_GIB, 1, how


def pod_size(group: NodeGroup, replica: Replica, settings: DeploySettings) -> PodSize:
    """Requests for one replica on one node group's instances; raises EmitError when the instance cannot hold the
    replicas the plan puts on it."""
    cpu, memory, api_servers, how = _wanted(replica, settings)
    shm = settings.shm_gib
    memory_total = memory + shm
    alloc = allocatable(group.cloud, group.instance_type, settings.node_reserve_cpu, settings.node_reserve_memory_gib)
    if alloc is None:
        return PodSize(cpu, memory_total, shm, api_servers, how + "; instance type not in the table: not capped")
    share = _gpu_share(group, replica) / alloc.instance.gpus
    cpu_cap = alloc.for_pods_cpu * share
    memory_cap = alloc.for_pods_memory_gib * share
    where = f"{group.instance_type} ({group.name})"
    if cpu_cap < MIN_CPU or memory_cap < MIN_MEMORY_GIB + min(shm, 1.0):
        raise EmitError(
            f"node group {group.name}: a {replica.slice} replica's share of {where} is {cpu_cap:.2f} cores / "
            f"{memory_cap:.1f} GiB after kubelet reservations and daemonsets; too small to run vLLM"
        )
    notes = [how]
    if cpu > cpu_cap:
        notes.append(f"CPU capped at the replica's share of {where}: {cpu_cap:.2f} of {cpu:g} wanted")
        cpu = cpu_cap
    if memory_total > memory_cap:
        # /dev/shm shrinks first (to 1 GiB at least), then the process memory.
        shm = max(min(shm, 1.0), shm - (memory_total - memory_cap))
        memory_total = min(memory_total, memory_cap)
        notes.append(f"memory capped at the replica's share of {where}: {memory_cap:.1f} GiB")
    shm = min(shm, memory_total / 4)
    return PodSize(cpu, memory_total, shm, api_servers, "; ".join(notes))


def group_pod_size(node_groups: list[NodeGroup], replica_of: dict[str, Replica], settings: DeploySettings) -> PodSize:
    """One Deployment spans node groups of one slice type: its pods must fit on the tightest of them."""
    sizes = [pod_size(ng, replica_of[ng.name], settings) for ng in node_groups]
    tight = min(sizes, key=lambda s: (s.cpu, s.memory_gib))
    return PodSize(
        min(s.cpu for s in sizes),
        min(s.memory_gib for s in sizes),
        min(s.shm_gib for s in sizes),
        max(s.api_server_count for s in sizes),
        tight.derivation,
    )
