"""vLLM command lines: the flags docs/deploy-bundle.md#choices-and-why requires, shell launchers that `sh -n` accepts
and that quote JSON safely, refusal of MIG arguments vLLM would mis-default, and (e2e) vLLM's own parser accepting
every argv the bundle emits (Kubernetes, SkyPilot and the launchers, deploy-time flags included)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.unit.plan_fixtures import h100_layout, mixed_plan, node_groups, require_tool
from vlmopt.emit import EmitError, emit_vllm_args
from vlmopt.emit.groups import VLLM_CLI_MODULE, engine_configs, replica_groups
from vlmopt.schemas import GpuAssignment


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return emit_vllm_args(mixed_plan())


def records(files: dict[str, str]) -> list[dict]:
    return [json.loads(t) for p, t in files.items() if p.endswith(".json") and not p.endswith("replicas.json")]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_one_record_and_launcher_per_engine_config(files: dict[str, str]) -> None:
    engines = engine_configs(mixed_plan())
    assert len(records(files)) == len(engines) == 5
    assert sum(p.endswith(".sh") for p in files) == 5
    assert {(r["service"], r["gpu"], r["slice"]) for r in records(files)} == {
        ("chat", "h100-sxm-80gb", "3g.40gb"),
        ("chat", "h100-sxm-80gb", "2g.20gb"),
        ("chat", "a100-80gb-sxm", "3g.40gb"),
        ("docs", "h100-sxm-80gb", "1g.10gb"),
        ("docs", "l4-24gb", "whole"),
    }


def test_flags_pinned_on_mig_and_quantization_only_when_needed(files: dict[str, str]) -> None:
    for rec in records(files):
        argv = rec["argv"]
        assert argv[:2] == ["vllm", "serve"]
        assert int(flag(argv, "--shutdown-timeout")) > 0
        assert 0.2 in json.loads(flag(argv, "--custom-histogram-buckets"))["time_to_first_token"]
        assert flag(argv, "--host") == "0.0.0.0" and flag(argv, "--served-model-name") == rec["service"]
        for name in ("--max-model-len", "--max-num-seqs", "--max-num-batched-tokens"):
            assert flag(argv, name) is not None
        assert json.loads(flag(argv, "--limit-mm-per-prompt"))["video"] == 0
        if rec["slice"] != "whole":
            assert float(flag(argv, "--gpu-memory-utilization")) == pytest.approx(0.9)
            assert rec["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"
        # AWQ names its kernel; compressed-tensors is read from the checkpoint, so the flag is dropped.
        assert flag(argv, "--quantization") == ("awq_marlin" if rec["service"] == "chat" else None)
        assert rec["capacity_source"].startswith(("estimated", "measured"))


def test_gpu_memory_utilization_defaults_to_a_pinned_value_on_mig() -> None:
    groups = node_groups()
    layout = h100_layout()
    replicas = [
        r.model_copy(update={"server_args": r.server_args.model_copy(update={"gpu_memory_utilization": None})})
        for r in layout.replicas
    ]
    for i in (0, 1):
        groups[i] = groups[i].model_copy(update={"gpu_layout": layout.model_copy(update={"replicas": replicas})})
    recs = records(emit_vllm_args(mixed_plan(groups)))
    h100 = [r for r in recs if r["gpu"] == "h100-sxm-80gb"]
    assert h100 and all(flag(r["argv"], "--gpu-memory-utilization") == "0.9" for r in h100)


def test_launchers_are_valid_sh_and_round_trip_the_arguments(files: dict[str, str], tmp_path: Path) -> None:
    sh = require_tool("sh")
    for rec in records(files):
        name = f"vllm/{rec['service']}--{rec['variant']}--{rec['gpu']}--{rec['slice']}.sh"
        script = files[name]
        path = tmp_path / Path(name).name
        path.write_text(script)
        assert subprocess.run([sh, "-n", str(path)], capture_output=True).returncode == 0
        exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
        words = shlex.split(exec_line)
        assert words[:5] == ["exec", "${PYTHON:-python}", "-m", VLLM_CLI_MODULE, "serve"] and words[-1] == "$@"
        assert words[5:-1] == rec["argv"][2:]


def test_launcher_runs_with_a_stub_python(files: dict[str, str], tmp_path: Path) -> None:
    """Executing the launcher passes every argument through intact (JSON included) and adds the caller's."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    rec = next(r for r in records(files) if r["slice"] == "3g.40gb" and r["gpu"] == "h100-sxm-80gb")
    script = tmp_path / "launch.sh"
    script.write_text(files["vllm/chat--awq--h100-sxm-80gb--3g.40gb.sh"])
    out = subprocess.run(
        [require_tool("sh"), str(script), "--port", "8003"],
        env={"PYTHON": str(stub), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["-m", VLLM_CLI_MODULE, "serve", *rec["argv"][2:], "--port", "8003"]


def test_replica_table_gives_each_replica_on_a_host_its_own_port(files: dict[str, str]) -> None:
    table = json.loads(files["vllm/replicas.json"])["replicas"]
    assert len(table) == sum(g.replicas for g in replica_groups(mixed_plan()))
    seen = set()
    for row in table:
        key = (row["node_group"], row["instance"], row["port"])
        assert key not in seen
        seen.add(key)
    a100 = [r for r in table if r["node_group"] == "a100-mig-spot"]
    assert sorted(r["port"] for r in a100) == list(range(8000, 8016))  # 8 GPUs x 2 slices


def _h100_with(update: dict) -> list:
    groups = node_groups()
    layout = h100_layout()
    replicas = [r.model_copy(update={"server_args": r.server_args.model_copy(update=update)}) for r in layout.replicas]
    groups[0] = groups[0].model_copy(update={"gpu_layout": layout.model_copy(update={"replicas": replicas})})
    return groups


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"max_num_seqs": None}, "server_args.max_num_seqs is not set.*vllm#55381"),
        ({"max_num_batched_tokens": None}, "server_args.max_num_batched_tokens is not set"),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size 2 on a MIG slice"),
    ],
)
def test_mig_arguments_vllm_would_mis_default_are_refused(update: dict, message: str) -> None:
    with pytest.raises(EmitError, match=message):
        emit_vllm_args(mixed_plan(_h100_with(update)))


def test_conflicting_arguments_for_one_engine_config_are_refused() -> None:
    groups = _h100_with({"max_num_seqs": 7})  # on-demand H100s differ from the spot ones
    with pytest.raises(EmitError, match=r"h100-mig-od and h100-mig-spot|h100-mig-spot and h100-mig-od"):
        emit_vllm_args(mixed_plan(groups))


def test_replicas_inconsistent_with_the_layout_are_refused() -> None:
    groups = node_groups()
    layout = h100_layout()
    wrong = GpuAssignment(mig_layout=["3g.40gb", "3g.40gb"], mig_placements=[0, 4], replicas=layout.replicas)
    groups[0] = groups[0].model_copy(update={"gpu_layout": wrong})
    with pytest.raises(EmitError, match=r"node group h100-mig-od: .*2g.20gb"):
        emit_vllm_args(mixed_plan(groups))


def _all_emitted_argvs() -> list[list[str]]:
    """Every vLLM command line a bundle carries: engine records, Kubernetes containers, SkyPilot runs."""
    import yaml

    from tests.unit.bundle_fixtures import by_kind, emit
    from tests.unit.plan_fixtures import multi_cloud_plan

    files = emit(multi_cloud_plan(), ab={"service": "chat", "variant": "fp8", "model": "Org/m", "weight_percent": 20})
    argvs = [json.loads(t)["argv"] for p, t in files.items()
             if p.startswith("vllm/") and p.endswith(".json") and p != "vllm/replicas.json"]
    argvs += [["vllm", "serve", *d["spec"]["template"]["spec"]["containers"][0]["args"]]
              for d in by_kind(files, "Deployment")]
    argvs += [shlex.split(yaml.safe_load(t)["run"]) for p, t in files.items() if p.startswith("skypilot/")]
    return argvs


@pytest.mark.e2e
def test_vllms_own_parser_accepts_every_emitted_command_line(serve_python: Path) -> None:
    """The serve env's vLLM parses each argv as `vllm serve` would (its serve subcommand's parser), deploy-time
    flags included: --shutdown-timeout, --custom-histogram-buckets (validated by vLLM's ObservabilityConfig)."""
    argvs = _all_emitted_argvs()
    assert all(a[:2] == ["vllm", "serve"] for a in argvs)
    program = (
        "import json, sys\n"
        "from vllm.config import ObservabilityConfig\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "parser = make_arg_parser(FlexibleArgumentParser())\n"
        "out = []\n"
        "for argv in json.load(sys.stdin):\n"
        "    ns = parser.parse_args(argv[2:])\n"
        "    buckets = ns.custom_histogram_buckets\n"
        "    if buckets is not None:\n"
        "        ObservabilityConfig(custom_histogram_buckets=buckets)\n"
        "    out.append({'max_num_seqs': ns.max_num_seqs, 'limit_mm_per_prompt': ns.limit_mm_per_prompt,\n"
        "                'shutdown_timeout': ns.shutdown_timeout, 'buckets': buckets,\n"
        "                'served_model_name': ns.served_model_name})\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(serve_python), "-c", program], input=json.dumps(argvs), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    for argv, ns in zip(argvs, parsed, strict=True):
        assert ns["max_num_seqs"] == int(flag(argv, "--max-num-seqs"))
        assert ns["limit_mm_per_prompt"] == json.loads(flag(argv, "--limit-mm-per-prompt"))
        assert ns["shutdown_timeout"] == int(flag(argv, "--shutdown-timeout")) > 0
        assert ns["buckets"] == json.loads(flag(argv, "--custom-histogram-buckets"))


@pytest.mark.e2e
def test_vllm_default_buckets_match_the_copy_the_bundle_extends(serve_python: Path) -> None:
    """--custom-histogram-buckets replaces a family's defaults; the bundle adds SLO edges to a copy of vLLM's
    defaults, which must be the installed vLLM's."""
    from vlmopt.emit.policy import VLLM_DEFAULT_BUCKETS

    program = (
        "import json\nfrom vllm.v1.metrics.buckets import histogram_buckets\n"
        f"print(json.dumps({{f: histogram_buckets(f) for f in {sorted(VLLM_DEFAULT_BUCKETS)!r}}}))\n"
    )
    result = subprocess.run([str(serve_python), "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = json.loads(result.stdout.strip().splitlines()[-1])
    assert installed == {k: list(v) for k, v in VLLM_DEFAULT_BUCKETS.items()}
