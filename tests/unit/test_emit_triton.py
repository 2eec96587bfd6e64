"""Triton model repository for the vLLM backend: layout, config.pbtxt fields, model.json engine args matching the
vLLM command line of the same engine config."""

from __future__ import annotations

import json
import re

from tests.unit.plan_fixtures import mixed_plan
from vlmopt.emit import emit_triton
from vlmopt.emit.groups import engine_configs
from vlmopt.emit.triton import extra_args_to_engine_args, render_pbtxt, triton_model_name


def test_repository_layout_one_model_per_engine_config() -> None:
    files = emit_triton(mixed_plan())
    names = {triton_model_name(e) for e in engine_configs(mixed_plan())}
    assert len(names) == 5
    for name in names:
        assert f"triton/model_repository/{name}/config.pbtxt" in files
        assert f"triton/model_repository/{name}/1/model.json" in files
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
    assert len(files) == 2 * len(names)


def test_config_pbtxt_uses_the_vllm_backend() -> None:
    files = emit_triton(mixed_plan())
    for path, text in files.items():
        if not path.endswith("config.pbtxt"):
            continue
        model = path.split("/")[2]
        assert f'name: "{model}"' in text
        assert 'backend: "vllm"' in text
        assert "kind: KIND_MODEL" in text and "count: 1" in text
        assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_model_json_matches_the_engine_arguments() -> None:
    plan = mixed_plan()
    files = emit_triton(plan)
    for engine in engine_configs(plan):
        data = json.loads(files[f"triton/model_repository/{triton_model_name(engine)}/1/model.json"])
        args = engine.server_args
        assert data["max_model_len"] == args.max_model_len
        assert data["max_num_seqs"] == args.max_num_seqs
        assert data["max_num_batched_tokens"] == args.max_num_batched_tokens
        assert data["limit_mm_per_prompt"] == args.limit_mm_per_prompt
        if engine.is_mig:
            assert args.gpu_memory_utilization is not None
            assert data["gpu_memory_utilization"] == args.gpu_memory_utilization
        assert data.get("quantization") in (None, "awq_marlin")  # compressed-tensors is auto-detected
        if engine.service == "docs":
            assert data["model"] == "/models/qwen2.5-vl-3b/fp8" and data["enable_prefix_caching"] is True


def test_extra_args_conversion() -> None:
    assert extra_args_to_engine_args(["--kv-cache-dtype", "fp8", "--enforce-eager", "--max-loras=4"]) == {
        "kv_cache_dtype": "fp8",
        "enforce_eager": True,
        "max_loras": 4,
    }


def test_render_pbtxt_nesting() -> None:
    text = render_pbtxt({"name": "m", "instance_group": [{"count": 2, "kind": "KIND_GPU"}], "opt": {"flag": True}})
    assert (
        text == 'name: "m"\ninstance_group [\n  {\n    count: 2\n    kind: KIND_GPU\n  }\n]\nopt {\n  flag: true\n}\n'
    )
