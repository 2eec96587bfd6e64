"""vLLM command lines per engine config: a JSON record and a shell launcher, plus the table of every replica.

Flags (docs/deploy-bundle.md#choices-and-why): batching limits and `--gpu-memory-utilization` always explicit on MIG,
`--limit-mm-per-prompt` as JSON, `--quantization` only when the checkpoint does not already declare it; on VMs the
server drains in-flight requests for the on-demand grace period on SIGTERM and records SLO-edged histograms.
"""

from __future__ import annotations

import shlex

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, GENERATED_BY, dump_json
from .groups import VLLM_CLI_MODULE, EngineConfig, engine_configs, replica_endpoints, service_plans
from .policy import frontend_args, histogram_buckets, service_timeouts, shutdown

VLLM_DIR = "vllm"


def engine_json_path(engine: EngineConfig) -> str:
    return f"{VLLM_DIR}/{engine.name}.json"


def engine_script_path(engine: EngineConfig) -> str:
    return f"{VLLM_DIR}/{engine.name}.sh"


def engine_record(engine: EngineConfig, frontend: list[str] | None = None) -> dict[str, object]:
    return {
        "service": engine.service,
        "variant": engine.variant,
        "gpu": engine.gpu,
        "slice": engine.slice,
        "argv": engine.argv(frontend),
        "env": engine.env,
        "server_args": engine.server_args.model_dump(mode="json"),
        "capacity_rps": engine.capacity_rps,
        "capacity_provenance": engine.capacity_provenance.model_dump(mode="json"),
        "capacity_source": engine.capacity_provenance.label(),
    }


def launcher_script(engine: EngineConfig, frontend: list[str] | None = None) -> str:
    """POSIX sh: export the non-secret env, then exec the server; extra arguments ("$@") are appended."""
    lines = [
        "#!/bin/sh",
        f"# {GENERATED_BY}: {engine.service} / {engine.variant} on {engine.gpu} {engine.slice}",
        f"# capacity {engine.capacity_rps:g} req/s at the SLO: {engine.capacity_provenance.label()}",
        "# HF_TOKEN / VLLM_API_KEY are read from the caller's environment; this file never holds them.",
        "set -eu",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(engine.env.items())]
    # `vllm serve` through its module: PYTHON lets a venv interpreter stand in for the one on PATH, and the module
    # works where the `vllm` console script is missing.
    serve_args = engine.argv(frontend)[2:]
    lines.append('exec "${PYTHON:-python}" ' + shlex.join(["-m", VLLM_CLI_MODULE, "serve", *serve_args]) + ' "$@"')
    return "\n".join(lines) + "\n"


def emit_vllm_args(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    files: dict[str, str] = {}
    plans = service_plans(plan)
    buckets = histogram_buckets([s.slo for s in plan.services])
    for engine in engine_configs(plan, settings):
        # VMs have no spot notice handling here: drain for as long as an on-demand pod would.
        stop = shutdown("on_demand", set(), service_timeouts(plans.get(engine.service), settings).request_s, settings)
        frontend = frontend_args(stop.drain_s, 1, buckets)
        files[engine_json_path(engine)] = dump_json(engine_record(engine, frontend))
        files[engine_script_path(engine)] = launcher_script(engine, frontend)
    replicas = [
        {
            "node_group": ep.node_group,
            "instance": ep.instance,
            "gpu_index": ep.gpu_index,
            "slot": ep.slot,
            "service": ep.group.service,
            "variant": ep.group.engine.variant,
            "slice": ep.group.engine.slice,
            "mig_start": ep.mig_start,
            "market": ep.group.market,
            "port": ep.port,
            "engine": engine_json_path(ep.group.engine),
        }
        for ep in replica_endpoints(plan, settings)
    ]
    files[f"{VLLM_DIR}/replicas.json"] = dump_json({"plan": plan.name, "replicas": replicas})
    return files
