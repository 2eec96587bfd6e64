"""vLLM command lines per engine config: a JSON record and a shell launcher, plus the table of every replica.

Flags follow research/planning.md §5.1: batching limits and `--gpu-memory-utilization` always explicit on MIG,
`--limit-mm-per-prompt` as JSON, `--quantization` only when the checkpoint does not already declare it.
"""

from __future__ import annotations

import shlex

from vlmopt.schemas import Plan

from ._common import DEFAULT_SETTINGS, GENERATED_BY, EmitSettings, dump_json
from .groups import EngineConfig, engine_configs, replica_endpoints

VLLM_DIR = "vllm"


def engine_json_path(engine: EngineConfig) -> str:
    return f"{VLLM_DIR}/{engine.name}.json"


def engine_script_path(engine: EngineConfig) -> str:
    return f"{VLLM_DIR}/{engine.name}.sh"


def engine_record(engine: EngineConfig) -> dict[str, object]:
    return {
        "service": engine.service,
        "variant": engine.variant,
        "gpu": engine.gpu,
        "slice": engine.slice,
        "argv": engine.argv(),
        "env": engine.env,
        "server_args": engine.server_args.model_dump(mode="json"),
        "capacity_rps": engine.capacity_rps,
        "capacity_provenance": engine.capacity_provenance.model_dump(mode="json"),
        "capacity_source": engine.capacity_provenance.label(),
    }


def launcher_script(engine: EngineConfig) -> str:
    """POSIX sh: export the non-secret env, then exec the server; extra arguments ("$@") are appended."""
    lines = [
        "#!/bin/sh",
        f"# {GENERATED_BY}: {engine.service} / {engine.variant} on {engine.gpu} {engine.slice}",
        f"# capacity {engine.capacity_rps:g} req/s at the SLO: {engine.capacity_provenance.label()}",
        "# HF_TOKEN / VLLM_API_KEY are read from the caller's environment; this file never holds them.",
        "set -eu",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(engine.env.items())]
    # PYTHON lets a venv interpreter stand in for the one on PATH.
    lines.append('exec "${PYTHON:-python}" ' + shlex.join(engine.argv()[1:]) + ' "$@"')
    return "\n".join(lines) + "\n"


def emit_vllm_args(plan: Plan, settings: EmitSettings = DEFAULT_SETTINGS) -> dict[str, str]:
    files: dict[str, str] = {}
    for engine in engine_configs(plan, settings):
        files[engine_json_path(engine)] = dump_json(engine_record(engine))
        files[engine_script_path(engine)] = launcher_script(engine)
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
