"""SkyPilot serve YAML, read by SkyPilot itself: the documented `sky serve up` command is parsed by SkyPilot's own
CLI (with the secrets in the environment, as a user runs it) and each file by `sky.Task.from_yaml` with those
secrets, so the schema, the service spec (replica policy, readiness probe) and the secret references are SkyPilot's
verdict, not ours. SkyPilot lives in its own env (.venv-sky, `scripts/setup.sh --ci-tools`): it pins click 8.1."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.bundle_fixtures import emit, flag
from tests.unit.plan_fixtures import mixed_plan, whole_gpu_only_plan
from vlmopt.emit.skypilot import accelerator_name

ROOT = Path(__file__).resolve().parents[2]

SKY_CHECK = r"""
import inspect, json, shlex, sys
from sky.client.cli import command
from sky import serve as serve_lib

# What `sky serve up` does before it contacts a SkyPilot API server: parse the command line (secrets read from the
# environment), build the task from the YAML with them, validate the service task.
accepted = set(inspect.signature(command._generate_task_with_service).parameters)
out = {}
for path, line in json.load(open(sys.argv[1])).items():
    argv = shlex.split(line)
    assert argv[:3] == ["sky", "serve", "up"], argv
    params = command.serve_up.make_context("up", argv[3:]).params
    cloud, region, zone = command._handle_infra_cloud_region_zone_options(
        params.get("infra"), params.get("cloud"), params.get("region"), params.get("zone"))
    args = {k: v for k, v in params.items() if k in accepted}
    args.update(service_yaml_args=params["service_yaml"], cloud=cloud, region=region, zone=zone,
                not_supported_cmd="sky serve update", pool=False)
    task = command._generate_task_with_service(**args)
    serve_lib.validate_service_task(task, pool=False)
    spec = task.service
    resources = list(task.resources)
    out[path] = {
        "secrets": sorted(task.secrets),
        "min_replicas": spec.min_replicas,
        "base_ondemand": spec.base_ondemand_fallback_replicas,
        "dynamic_fallback": spec.dynamic_ondemand_fallback,
        "readiness_path": spec.readiness_path,
        "image_ids": sorted(str(r.image_id) for r in resources),
        "use_spot": sorted({r.use_spot for r in resources}),
        "run": task.run,
        "setup": task.setup,
    }
print(json.dumps(out))
"""


def sky_python() -> Path:
    python = Path(os.environ.get("VLMOPT_SKY_PYTHON", ROOT / ".venv-sky" / "bin" / "python"))
    if not python.exists():
        pytest.fail(f"SkyPilot env missing ({python}): run `scripts/setup.sh --ci-tools` (CI builds it)")
    return python


def sky_check(files: dict[str, str], tmp_path: Path) -> dict[str, dict]:
    commands = {}
    for path, text in files.items():
        if path.startswith("skypilot/"):
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            commands[path] = text.splitlines()[0].split(": ", 1)[1]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_TOKEN": "hf-dummy", "VLLM_API_KEY": "key-dummy"}
    result = subprocess.run([str(sky_python()), "-c", SKY_CHECK, "commands.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def load(plan=None, **settings) -> dict[str, dict]:
    files = emit(plan or mixed_plan(), **settings)
    return {p: yaml.safe_load(t) for p, t in files.items() if p.startswith("skypilot/")}


def test_skypilot_parses_the_documented_command_and_every_file(tmp_path: Path) -> None:
    files = emit(mixed_plan())
    verdict = sky_check(files, tmp_path)
    assert set(verdict) == {"skypilot/chat.yaml", "skypilot/docs.yaml"}
    for v in verdict.values():
        assert v["secrets"] == ["HF_TOKEN", "VLLM_API_KEY"]  # every null secret resolved from --secret
        assert v["readiness_path"] == "/health"
        assert v["image_ids"] == ["{'us-east-1': 'docker:vllm/vllm-openai:v0.32.0'}"] or all(
            "docker:vllm/vllm-openai:v0.32.0" in i for i in v["image_ids"])
        assert v["setup"] is None  # nothing installed on a spot replacement
        assert v["use_spot"] == [True] and v["dynamic_fallback"] is True
    assert verdict["skypilot/chat.yaml"]["base_ondemand"] == 6


def test_open_endpoint_drops_the_api_key_secret(tmp_path: Path) -> None:
    files = emit(whole_gpu_only_plan(), secrets={"require_api_key": False})
    verdict = sky_check(files, tmp_path)
    assert verdict["skypilot/docs.yaml"]["secrets"] == ["HF_TOKEN"]
    assert "--secret VLLM_API_KEY" not in files["skypilot/docs.yaml"].splitlines()[0]


def test_skypilot_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check is real: a replica policy with an unknown key fails SkyPilot's schema."""
    files = emit(whole_gpu_only_plan())
    spec = yaml.safe_load(files["skypilot/docs.yaml"])
    spec["service"]["replica_policy"]["min_replica"] = 1
    header = files["skypilot/docs.yaml"].splitlines()[0]
    files["skypilot/docs.yaml"] = header + "\n" + yaml.safe_dump(spec)
    with pytest.raises(AssertionError, match="min_replica"):
        sky_check(files, tmp_path)


def test_weights_come_from_the_bucket_and_the_server_stays_offline() -> None:
    docs = load()["skypilot/docs.yaml"]
    assert docs["file_mounts"] == {
        "/models/qwen2.5-vl-3b/fp8": {
            "source": "s3://vlmopt-test-models/qwen/qwen2.5-vl-3b/fp8",
            "mode": "MOUNT_CACHED",
        }
    }
    argv = shlex.split(docs["run"])
    assert argv[:2] == ["vllm", "serve"] and flag(argv, "--model") == "/models/qwen2.5-vl-3b/fp8"
    assert docs["envs"]["HF_HUB_OFFLINE"] == "1"
    chat = load()["skypilot/chat.yaml"]
    assert flag(shlex.split(chat["run"]), "--model") == "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"  # vLLM fetches hub ids
    assert "PYTORCH_CUDA_ALLOC_CONF" not in chat["envs"]  # MIG-only setting, and replicas here are whole GPUs
    assert int(flag(shlex.split(chat["run"]), "--shutdown-timeout")) < 110  # inside AWS's spot notice


def test_on_demand_only_service_does_not_use_spot() -> None:
    docs = load(whole_gpu_only_plan())["skypilot/docs.yaml"]
    assert docs["resources"]["use_spot"] is False
    assert "base_ondemand_fallback_replicas" not in docs["service"]["replica_policy"]
    assert docs["resources"]["any_of"] == [
        {"accelerators": "L4:1", "infra": "aws/us-east-1", "instance_type": "g6.xlarge"}
    ]


def test_accelerator_names() -> None:
    assert accelerator_name("a100-80gb-sxm") == "A100-80GB"
    assert accelerator_name("a100-40gb") == "A100"
    assert accelerator_name("h100-nvl-94gb") == "H100"
    assert accelerator_name("l40s-48gb") == "L40S" and accelerator_name("l4-24gb") == "L4"
