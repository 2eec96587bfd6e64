"""A campaign job's own command, run here against the serve env's vLLM on CPU (one server start): the command and
arguments are taken from the emitted Job YAML, `$(VAR)` expanded as the kubelet does, with the job's mount points
under a local root (the inputs ConfigMap written out, the checkpoint where the init step would put it, a folder
standing in for the results PVC). Then `vlmopt benchmark collect` reads that folder and `vlmopt plan --profiles`
plans from what it measured, naming the job.

This machine has no GPU, so the device is its CPU: a user GPU catalog (VLMOPT_DATA_DIR) names the CPU as
`local-cpu`, as `vlmopt demo` does, and the campaign targets it. What only a cluster shows (scheduling, MIG, NVML
in a pod, the image) is listed in docs/benchmark.md#what-only-a-real-cluster-shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.campaign_fixtures import kubelet_expand
from vlmopt.cli import app
from vlmopt.schemas import BenchmarkProfile, load_model
from vlmopt.schemas.campaign import CampaignManifest

REPO = Path(__file__).resolve().parents[2]
# The job's environment variables that are paths inside the pod: re-rooted under the local stand-in.
POD_PATHS = ("VLMOPT_INPUTS_DIR", "VLMOPT_JOB_DIR", "VLMOPT_VENV", "HOME", "XDG_CACHE_HOME", "HF_HOME")
BENCH = ["--concurrency", "1,2", "--num-prompts", "4", "--input-tokens", "16", "--output-tokens", "16",
         "--warmup", "1", "--max-model-len", "1024", "--max-num-seqs", "8", "--slo",
         "ttft_p95_ms=60000,tpot_p95_ms=5000", "--startup-timeout", "900"]


def _user_catalog(folder: Path) -> Path:
    """The bundled GPU catalog plus this machine's CPU as `local-cpu` (vlmopt.demo.local.cpu_catalog_entry)."""
    from vlmopt.demo.local import cpu_catalog_entry
    from vlmopt.hw.catalog import load_gpu_catalog
    from vlmopt.machine import cpu_model_name
    from vlmopt.schemas import DeviceInfo

    data = load_gpu_catalog().model_dump(mode="json", exclude_none=True)
    cpu = cpu_catalog_entry(DeviceInfo(kind="cpu", name=cpu_model_name()), 8.0)
    data["gpus"].append(cpu.model_dump(mode="json", exclude_none=True))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpus.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def _variant_manifest(work: Path, model_dir: Path) -> Path:
    """A manifest with the bf16 tiny model as its one variant (as `vlmopt quantize` lists the baseline)."""
    folder = work / "variants" / "tiny-llava"
    folder.mkdir(parents=True)
    (folder / "bf16").symlink_to(model_dir)
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    architecture = json.loads((model_dir / "config.json").read_text())["architectures"][0]
    manifest = {"base_model": "tiny-llava", "architecture": architecture, "variants": [
        {"name": "bf16", "method": "none", "scheme": "BF16", "path": "bf16", "bytes_on_disk": size}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("campaign")


def test_the_jobs_command_measures_collect_reads_it_and_plan_uses_it(
    work: Path, tiny_model_dir: Path, serve_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    data_dir = _user_catalog(work / "data")
    monkeypatch.setenv("VLMOPT_DATA_DIR", str(data_dir))
    manifest = _variant_manifest(work, tiny_model_dir)
    # an existing cluster (no cloud): the checkpoint comes from the hub there, by the deploy bundle's init step
    (work / "deploy.yaml").write_text(yaml.safe_dump({"models": {"variants/tiny-llava/bf16": "vlmopt/tiny-llava"}}))
    runner = CliRunner()
    made = runner.invoke(app, ["benchmark", "campaign", str(manifest.relative_to(work)), "--target", "local-cpu",
                               "--results", "pvc:bench-results", "--name", "tiny", "--deploy-settings", "deploy.yaml",
                               "--", *BENCH])
    assert made.exit_code == 0, made.output
    campaign = work / "campaigns" / "tiny"
    record = load_model(CampaignManifest, campaign / "campaign.json")
    (job,) = record.jobs
    (job_doc,) = _documents(campaign / job.file)
    container = job_doc["spec"]["template"]["spec"]["containers"][0]
    inputs = next(d for d in _documents(campaign / "clusters/fleet/kubernetes/00-campaign.yaml")
                  if d["kind"] == "ConfigMap")

    # the pod's file system under a local root
    root = work / "pod"
    (root / "campaign" / "inputs").mkdir(parents=True)
    for name, text in inputs["data"].items():
        (root / "campaign" / "inputs" / name).write_text(text)
    init = job_doc["spec"]["template"]["spec"]["initContainers"][0]
    assert "hf download vlmopt/tiny-llava --local-dir /models/tiny-llava/bf16" in init["command"][2]
    (root / "models" / "tiny-llava").mkdir(parents=True)
    (root / "models" / "tiny-llava" / "bf16").symlink_to(tiny_model_dir)  # what the init step leaves there
    (root / "results").mkdir()  # the PVC
    (root / "tmp").mkdir()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in POD_PATHS:
        env[name] = f"{root}{env[name]}"
    env["VLMOPT_SERVE_PYTHON"] = str(serve_python)  # the image's own python with vLLM
    shims = work / "bin"
    shims.mkdir()
    (shims / "vlmopt").write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from vlmopt.cli import main; main()' \"$@\"\n")
    (shims / "vlmopt").chmod(0o755)
    env.update(PATH=f"{shims}:{os.environ['PATH']}", PYTHONPATH=str(REPO), VLMOPT_DATA_DIR=str(data_dir),
               VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), HOSTNAME="tiny-pod-0")
    command = [container["command"][0], f"{root}{container['command'][1]}"]
    args = [kubelet_expand(a, env) for a in container["args"]]
    assert args[2] == f"{root}/campaign/inputs/manifest.json" and args[-2] == f"{env['VLMOPT_JOB_DIR']}/profiles"
    done = subprocess.run([*command, *args], env=env, cwd=root, capture_output=True, text=True, timeout=1500)
    job_dir = Path(env["VLMOPT_JOB_DIR"])
    log = (job_dir / "job.log").read_text()
    assert done.returncode == 0, log[-4000:]
    assert "[vlmopt-job] tiny/tiny-bf16-local-cpu started" in log and "installing" not in log  # vlmopt was there
    assert "[vlmopt-job] exit code 0" in log and "[vlmopt-job] exit code 0" in done.stdout  # also the pod's output
    status = json.loads((job_dir / "status.json").read_text())
    assert (status["state"], status["exit_code"], status["host"]) == ("exited", 0, "tiny-pod-0")
    (profile_path,) = sorted((job_dir / "profiles").rglob("*@*.json"))
    measured = load_model(BenchmarkProfile, profile_path)
    assert measured.complete and [p.label for p in measured.points] == ["c1", "c2"]
    assert measured.campaign_job == "tiny/tiny-bf16-local-cpu" and measured.device.catalog_id == "local-cpu"
    assert "in job tiny/tiny-bf16-local-cpu" in measured.provenance.source

    # collect: from the folder standing in for the PVC
    collected = runner.invoke(app, ["benchmark", "collect", "campaigns/tiny", "--from", str(root / "results" / "tiny")])
    assert collected.exit_code == 0, collected.output
    record = load_model(CampaignManifest, campaign / "campaign.json")
    (job,) = record.jobs
    assert job.outcome == "complete" and job.profile == "profiles/tiny-llava/bf16@local-cpu.json"
    assert job.measured_startup_s and job.measured_startup_s > 0
    assert record.actual_gpu_hours is None  # never submitted through vlmopt: no run to time
    stored = load_model(BenchmarkProfile, campaign / job.profile)
    assert stored.points == measured.points and stored.manifest == str(manifest.resolve())

    # plan from what the campaign measured
    (work / "wl.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "constraints": {"markets": ["on_demand"], "gpus": ["local-cpu"]},
        "services": [{"name": "vqa", "model": str(tiny_model_dir), "manifest": str(manifest), "peak_rps": 0.5,
                      "input_tokens": 16, "output_tokens": 16, "images_per_request": 1, "image_size": [56, 56],
                      "max_model_len": 1024, "slo": {"ttft_p95_ms": 60000, "tpot_p95_ms": 5000}}]}))
    (work / "inv.yaml").write_text(yaml.safe_dump({"source": "this machine", "gpus": [
        {"index": 0, "name": measured.device.name, "memory_total_gib": 8.0, "catalog_id": "local-cpu",
         "usd_per_hour": 0.1}]}))
    planned = runner.invoke(app, ["plan", "--workload", "wl.yaml", "--profiles", "campaigns/tiny/profiles",
                                  "--mode", "fleet", "--inventory", "inv.yaml", "--out", "deploy/tiny",
                                  "--report-dir", "reports/tiny"])
    assert planned.exit_code == 0, planned.output
    plan = json.loads((work / "deploy/tiny/plan.json").read_text())
    replicas = [r for g in plan["node_groups"] for r in g["gpu_layout"]["replicas"]]
    assert replicas and all(r["capacity_provenance"]["kind"] == "measured" for r in replicas)
    assert all("(job tiny/tiny-bf16-local-cpu, run " in r["capacity_provenance"]["source"] for r in replicas)
