"""SkyPilot serve YAML per service for the spot / on-demand mix (research/planning.md §5.5, SkyServe/SpotHedge §6).

SkyPilot rents whole GPUs and runs one replica per VM, so a service the plan packs onto MIG slices runs here as one
replica per whole GPU of the same type: more capacity per replica than planned, never less. The replica policy
keeps the plan's on-demand replicas as `base_ondemand_fallback_replicas` and falls back to on-demand when spot
capacity is gone (`dynamic_ondemand_fallback`).
"""

from __future__ import annotations

import math
import re
import shlex

from vlmopt.schemas import Plan

from ._common import DEFAULT_SETTINGS, GENERATED_BY, EmitSettings, dump_yaml, file_slug, k8s_name
from .groups import (
    EngineConfig,
    ReplicaGroup,
    container_model_path,
    is_hub_model_id,
    replica_groups,
    services_in_order,
)
from .secrets import SECRET_ENV_NAMES

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


def service_yaml(plan: Plan, service: str, groups: list[ReplicaGroup], settings: EmitSettings) -> dict:
    total = sum(g.replicas for g in groups)
    on_demand = sum(g.replicas for g in groups if g.market == "on_demand")
    spot = total - on_demand
    engine = _run_engine(groups)
    if not engine.is_mig:
        env = dict(engine.env)
    else:
        # A MIG engine config runs on a whole GPU here: MIG-only allocator settings do not apply.
        env = {k: v for k, v in engine.env.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    policy: dict[str, object] = {
        "min_replicas": total,
        "max_replicas": max(total + 1, math.ceil(total * settings.hpa_max_replicas_factor)),
        "target_qps_per_replica": round(min(g.engine.capacity_rps for g in groups), 3),
    }
    resources: dict[str, object] = {"ports": settings.port, "use_spot": spot > 0, "any_of": _resource_options(groups)}
    if spot > 0:
        policy["base_ondemand_fallback_replicas"] = on_demand
        policy["dynamic_ondemand_fallback"] = True
    spec: dict[str, object] = {
        "name": k8s_name(plan.name, service),
        "service": {
            "readiness_probe": {"path": "/health", "initial_delay_seconds": 1200},
            "replica_policy": policy,
        },
        "resources": resources,
        "envs": env,
        # Values come from `sky serve up --secret HF_TOKEN ...`; null here means "required, not stored".
        "secrets": {name: None for name in SECRET_ENV_NAMES},
        "setup": shlex.join(["pip", "install", f"vllm=={settings.vllm_version}"]),
        "run": shlex.join(engine.argv()),
    }
    if not is_hub_model_id(engine.server_args.model):
        # A local model folder is uploaded to every replica; the command reads it from there.
        remote = container_model_path(engine.server_args.model, settings)
        spec["file_mounts"] = {remote: engine.server_args.model}
        argv = engine.argv()
        argv[argv.index("--model") + 1] = remote
        spec["run"] = shlex.join(argv)
    return spec


def emit_skypilot(plan: Plan, settings: EmitSettings = DEFAULT_SETTINGS) -> dict[str, str]:
    groups = replica_groups(plan, settings)
    files: dict[str, str] = {}
    for service in services_in_order(plan):
        own = [g for g in groups if g.service == service]
        if not own:
            continue
        header = [f"{GENERATED_BY} ({plan.name}): sky serve up -n {k8s_name(service)} --secret HF_TOKEN <this file>"]
        if any(g.engine.is_mig for g in own):
            header.append("SkyPilot runs one replica per whole GPU: MIG-packed replicas get a whole GPU each here.")
        files[f"{SKYPILOT_DIR}/{file_slug(service)}.yaml"] = dump_yaml(
            service_yaml(plan, service, own, settings), header=header
        )
    return files
