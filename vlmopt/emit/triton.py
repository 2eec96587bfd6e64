"""Triton model repository served by Triton's vLLM backend: per engine config `<name>/config.pbtxt`
(`backend: "vllm"`) and `<name>/1/model.json`, whose keys are vLLM engine arguments (the same values as the
vLLM command line in vllm/)."""

from __future__ import annotations

from collections.abc import Sequence

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, dump_json, file_slug
from .groups import EngineConfig, container_model_path, engine_configs, is_hub_model_id

TRITON_DIR = "triton/model_repository"
_ENGINE_FIELDS = (
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "quantization",
    "dtype",
    "limit_mm_per_prompt",
    "tensor_parallel_size",
)


def _coerce(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def extra_args_to_engine_args(extra: Sequence[str]) -> dict[str, object]:
    """vLLM flags -> engine-arg keys: ['--kv-cache-dtype', 'fp8', '--enforce-eager'] ->
    {'kv_cache_dtype': 'fp8', 'enforce_eager': True} (a flag without a value becomes True)."""
    out: dict[str, object] = {}
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--"):
            i += 1
            continue
        flag, _, inline = item[2:].partition("=")
        key = flag.replace("-", "_")
        if inline:
            out[key] = _coerce(inline)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out[key] = _coerce(extra[i + 1])
            i += 1
        else:
            out[key] = True
        i += 1
    return out


def model_json(engine: EngineConfig, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, object]:
    args = engine.server_args
    # Triton's vLLM backend downloads hub ids itself; local folders are read from the model volume.
    model = args.model if is_hub_model_id(args.model) else container_model_path(args.model)
    data: dict[str, object] = {"model": model}
    if args.served_model_name:
        data["served_model_name"] = args.served_model_name
    for name in _ENGINE_FIELDS:
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    if args.enforce_eager:
        data["enforce_eager"] = True
    data.update(extra_args_to_engine_args(args.extra_args))
    return data


def _pbtxt_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.isupper() and value.replace("_", "").isalnum():
        return value  # enum constant, e.g. KIND_MODEL
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def render_pbtxt(message: dict[str, object], indent: int = 0) -> str:
    """Protobuf text format from a dict: nested dicts are messages, lists of dicts repeated messages."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", render_pbtxt(value, indent + 1).rstrip("\n"), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key} [")
            items = []
            for item in value:
                body = render_pbtxt(item, indent + 2).rstrip("\n") if isinstance(item, dict) else None
                items.append(f"{pad}  {{\n{body}\n{pad}  }}" if body is not None else f"{pad}  {_pbtxt_value(item)}")
            lines.append(",\n".join(items))
            lines.append(f"{pad}]")
        else:
            lines.append(f"{pad}{key}: {_pbtxt_value(value)}")
    return "\n".join(lines) + "\n"


def model_config(name: str) -> dict[str, object]:
    # The vLLM engine places itself on the device it sees, so Triton runs one model instance (KIND_MODEL).
    return {"name": name, "backend": "vllm", "instance_group": [{"count": 1, "kind": "KIND_MODEL"}]}


def triton_model_name(engine: EngineConfig) -> str:
    return file_slug(engine.service, engine.variant, engine.gpu, engine.slice).replace(".", "_")


def emit_triton(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    files: dict[str, str] = {}
    for engine in engine_configs(plan, settings):
        name = triton_model_name(engine)
        files[f"{TRITON_DIR}/{name}/config.pbtxt"] = render_pbtxt(model_config(name))
        files[f"{TRITON_DIR}/{name}/1/model.json"] = dump_json(model_json(engine, settings))
    return files
