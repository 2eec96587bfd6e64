"""SkyPilot serve YAML: readiness probe, replica policy for the spot mix (on-demand floor + dynamic fallback),
`any_of` resources per GPU type, secrets by name only."""

from __future__ import annotations

import shlex

import yaml

from tests.unit.plan_fixtures import mixed_plan, whole_gpu_only_plan
from vlmopt.emit import emit_skypilot
from vlmopt.emit.skypilot import accelerator_name

# Top-level keys of a SkyPilot task/service YAML (docs.skypilot.co reference/yaml-spec) this emitter may use.
TASK_KEYS = {"name", "service", "resources", "envs", "secrets", "setup", "run", "file_mounts"}


def load(plan=None) -> dict[str, dict]:
    return {p: yaml.safe_load(t) for p, t in emit_skypilot(plan or mixed_plan()).items()}


def test_one_service_file_per_service_with_known_keys() -> None:
    files = load()
    assert set(files) == {"skypilot/chat.yaml", "skypilot/docs.yaml"}
    for spec in files.values():
        assert set(spec) <= TASK_KEYS
        assert spec["service"]["readiness_probe"]["path"] == "/health"
        assert spec["resources"]["ports"] == 8000


def test_spot_mix_keeps_the_on_demand_floor_and_falls_back() -> None:
    chat = load()["skypilot/chat.yaml"]
    policy = chat["service"]["replica_policy"]
    # chat: 2 on-demand H100 3g + 2 on-demand H100 2g; spot: 3+3 H100 slices + 16 A100 slices
    assert policy["min_replicas"] == 26
    assert policy["base_ondemand_fallback_replicas"] == 4
    assert policy["dynamic_ondemand_fallback"] is True
    assert policy["max_replicas"] > policy["min_replicas"]
    assert policy["target_qps_per_replica"] == 1.6  # the smallest replica's planned capacity
    assert chat["resources"]["use_spot"] is True
    accelerators = {o["accelerators"] for o in chat["resources"]["any_of"]}
    assert accelerators == {"H100:1", "A100-80GB:1"}
    assert all(o["infra"] == "aws/us-east-1" for o in chat["resources"]["any_of"])


def test_on_demand_only_service_does_not_use_spot() -> None:
    docs = load(whole_gpu_only_plan())["skypilot/docs.yaml"]
    assert docs["resources"]["use_spot"] is False
    assert "base_ondemand_fallback_replicas" not in docs["service"]["replica_policy"]
    assert docs["resources"]["any_of"] == [
        {"accelerators": "L4:1", "infra": "aws/us-east-1", "instance_type": "g6.xlarge"}
    ]


def test_run_is_the_vllm_command_and_secrets_are_names_only() -> None:
    for spec in load().values():
        argv = shlex.split(spec["run"])
        assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
        assert argv[argv.index("--port") + 1] == "8000"
        assert spec["secrets"] == {"HF_TOKEN": None, "VLLM_API_KEY": None}
        assert not any(k in spec["envs"] for k in ("HF_TOKEN", "VLLM_API_KEY"))
    # a local model folder is uploaded and read from where it lands; a hub id is downloaded by vLLM
    docs = load()["skypilot/docs.yaml"]
    assert docs["file_mounts"] == {"/models/qwen2.5-vl-3b/fp8": "variants/qwen2.5-vl-3b/fp8"}
    assert "--model /models/qwen2.5-vl-3b/fp8" in docs["run"]
    assert "file_mounts" not in load()["skypilot/chat.yaml"]
    # on a whole GPU the MIG-only allocator setting is not carried over
    assert "PYTORCH_CUDA_ALLOC_CONF" not in load()["skypilot/chat.yaml"]["envs"]


def test_accelerator_names() -> None:
    assert accelerator_name("a100-80gb-sxm") == "A100-80GB"
    assert accelerator_name("a100-40gb") == "A100"
    assert accelerator_name("h100-nvl-94gb") == "H100"
    assert accelerator_name("l40s-48gb") == "L40S" and accelerator_name("l4-24gb") == "L4"
