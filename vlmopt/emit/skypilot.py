"""SkyPilot serve YAML per service for the spot / on-demand mix (SkyServe's SpotHedge policy, docs/cost-model.md).

SkyPilot rents whole GPUs and runs one replica per VM, so a service the plan packs onto MIG slices runs here as one
replica per whole GPU of the same type: more capacity per replica than planned, never less. Replicas run the vLLM
image (`image_id: docker:`), so a spot replacement pulls a cached image instead of installing vLLM; checkpoints
come from a bucket mount (or the hub), never from the laptop that ran `sky serve up`.

The on-demand floor (`base_ondemand_fallback_replicas`) carries the on-demand capacity the plan's availability
model bought; `dynamic_ondemand_fallback` replaces spot replicas with on-demand ones while spot is unavailable.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, GENERATED_BY, dump_yaml, file_slug, k8s_name
from .groups import EngineConfig, ReplicaGroup, is_hub_model_id, model_dir_name, replica_groups, services_in_order
from .policy import frontend_args, histogram_buckets, service_timeouts, shutdown
from .weights import weight_source

SKYPILOT_DIR = "skypilot"

# vlmopt GPU catalog id prefix -> SkyPilot accelerator name (`sky show-gpus`); first match wins.
_ACCELERATOR_NAMES: tuple[tuple[str, str], ...] = (
    (r"^a100-80gb", "A100-80GB"),
    (r"^a100", "A100"),
    (r"^a30", "A30"),
    (r"^a10g", "A10G"),
    (r"^gh200", "GH200"),
    (r"^h200", "H200"),
    (r"^h100", "H100"),
    (r"^b200", "B200"),
    (r"^l40s", "L40S"),
    (r"^l4", "L4"),
    (r"^t4", "T4"),
)


def accelerator_name(gpu_id: str) -> str:
    for pattern, name in _ACCELERATOR_NAMES:
        if re.match(pattern, gpu_id):
            return name
    return gpu_id.split("-")[0].upper()


def _resource_options(groups: list[ReplicaGroup]) -> list[dict]:
    options: list[dict] = []
    for group in groups:
        for ng in group.node_groups:
            option: dict[str, object] = {"accelerators": f"{accelerator_name(ng.gpu)}:1"}
            if ng.cloud:
                option["infra"] = f"{ng.cloud}/{ng.region}" if ng.region else ng.cloud
            if ng.instance_type and ng.gpus_per_instance == 1:
                option["instance_type"] = ng.instance_type
            if option not in options:
                options.append(option)
    return options


def _run_engine(groups: list[ReplicaGroup]) -> EngineConfig:
    """The command every replica runs: a whole-GPU config when the plan has one, else the smallest-capacity one
    (its batch limits are safe on any GPU the service may land on)."""
    engines = [g.engine for g in groups]
    whole = [e for e in engines if not e.is_mig]
    return min(whole or engines, key=lambda e: e.capacity_rps)


@dataclass(frozen=True)
class SkyWeights:
    """How a checkpoint reaches a SkyPilot VM: `file_mounts` entries, what vLLM is given as --model, and whether the
    server can stay off the hub (the weights are on disk before it starts)."""

    file_mounts: dict[str, object]
    model_arg: str
    offline: bool
    hub_id: str | None = None


def weights_mount(model: str, cloud: str | None, settings: DeploySettings) -> SkyWeights:
    """A bucket source is mounted (MOUNT_CACHED: read through a local cache); a hub id is given to vLLM as is; a
    local folder without a bucket is uploaded by SkyPilot itself and mounted on every VM."""
    source = weight_source(model, cloud, settings)
    remote = f"/models/{model_dir_name(model)}"
    if source.kind in ("s3", "gs"):
        return SkyWeights({remote: {"source": source.uri, "mode": "MOUNT_CACHED"}}, remote, True)
    if source.kind == "hub":
        return SkyWeights({}, source.uri, False, hub_id=source.uri)
    if not is_hub_model_id(model):
        return SkyWeights({remote: model}, remote, True)
    return SkyWeights({}, model, False)  # pragma: no cover - a hub id always resolves to a hub source


def secret_names(settings: DeploySettings) -> list[str]:
    names = ["HF_TOKEN"]
    if settings.secrets.require_api_key:
        names.append("VLLM_API_KEY")
    return names


def serve_up_command(plan: Plan, service: str, path: str, settings: DeploySettings) -> list[str]:
    """`sky serve up` with every null secret given by `--secret NAME` (SkyPilot reads NAME's value from the caller's
    environment); a null secret left out fails the launch."""
    argv = ["sky", "serve", "up", "-n", k8s_name(plan.name, service)]
    for name in secret_names(settings):
        argv += ["--secret", name]
    return [*argv, path]


def service_yaml(plan: Plan, service: str, groups: list[ReplicaGroup], settings: DeploySettings) -> dict:
    engine = _run_engine(groups)
    target_qps = round(min(g.engine.capacity_rps for g in groups), 3)
    total = sum(g.replicas for g in groups)
    od_capacity = sum(g.replicas * g.engine.capacity_rps for g in groups if g.market == "on_demand")
    spot = any(g.market == "spot" for g in groups)
    # The on-demand floor carries the on-demand capacity the plan bought, counted in this file's replicas.
    base_od = math.ceil(od_capacity / target_qps - 1e-9) if target_qps > 0 else 0
    if not engine.is_mig:
        env = dict(engine.env)
    else:
        # A MIG engine config runs on a whole GPU here: MIG-only allocator settings do not apply.
        env = {k: v for k, v in engine.env.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    policy: dict[str, object] = {
        "min_replicas": total,
        "max_replicas": max(total + 1, math.ceil(total * settings.autoscaling.max_replicas_factor)),
        "target_qps_per_replica": target_qps,
    }
    if spot:
        policy["base_ondemand_fallback_replicas"] = min(base_od, total)
        policy["dynamic_ondemand_fallback"] = True
    resources: dict[str, object] = {
        "image_id": f"docker:{settings.image}",
        "ports": settings.port,
        "use_spot": spot,
        "any_of": _resource_options(groups),
    }
    clouds = {ng.cloud.lower() for g in groups for ng in g.node_groups if ng.cloud}
    timeouts = service_timeouts(next((s for s in plan.services if s.service == service), None), settings)
    stop = shutdown("spot" if spot else "on_demand", clouds, timeouts.request_s, settings)
    buckets = histogram_buckets([s.slo for s in plan.services if s.service == service])
    args = engine.server_args.model_copy(update={"port": settings.port})
    spec: dict[str, object] = {
        "name": k8s_name(plan.name, service),
        "service": {
            "readiness_probe": {"path": "/health", "initial_delay_seconds": 1200},
            "replica_policy": policy,
        },
        "resources": resources,
        "envs": env,
        # Null = a managed reference: `sky serve up --secret NAME` fills it from the caller's environment.
        "secrets": {name: None for name in secret_names(settings)},
    }
    weights = weights_mount(args.model, next(iter(sorted(clouds)), None), settings)
    if weights.file_mounts:
        spec["file_mounts"] = weights.file_mounts
    if weights.offline:
        env["HF_HUB_OFFLINE"] = "1"
    args = args.model_copy(update={"model": weights.model_arg})
    run_engine = EngineConfig(**{**engine.__dict__, "server_args": args})
    spec["run"] = shlex.join(run_engine.argv(frontend_args(stop.drain_s, 1, buckets)))
    return spec


def emit_skypilot(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    groups = replica_groups(plan, settings)
    files: dict[str, str] = {}
    for service in services_in_order(plan):
        own = [g for g in groups if g.service == service]
        if not own:
            continue
        path = f"{SKYPILOT_DIR}/{file_slug(service)}.yaml"
        header = [f"{GENERATED_BY} ({plan.name}): {shlex.join(serve_up_command(plan, service, path, settings))}"]
        if any(g.engine.is_mig for g in own):
            header.append("SkyPilot runs one replica per whole GPU: MIG-packed replicas get a whole GPU each here.")
        files[path] = dump_yaml(service_yaml(plan, service, own, settings), header=header)
    return files
