"""SkyPilot campaign jobs, read by SkyPilot itself (.venv-sky, skypilot 0.14.1): the documented `sky jobs launch`
line is parsed by SkyPilot's CLI and each task built by its loader; `--submit` goes through the real bridge with
SkyPilot's public API functions replaced (tests/unit/sky_fake/sitecustomize.py): launch, status, logs, a failed
job, a job that found no capacity, a spot preemption, and no credentials."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.campaign_fixtures import make, working_folder
from tests.unit.test_emit_skypilot import sky_python
from vlmopt.campaign import build
from vlmopt.campaign.collect import collect
from vlmopt.campaign.engine import EngineError
from vlmopt.campaign.sky import SkyClient
from vlmopt.campaign.submit import Engines, resubmittable, submit
from vlmopt.schemas.campaign import JobRun

FAKE = Path(__file__).with_name("sky_fake")

SKY_JOBS_CHECK = r"""
import inspect, json, shlex, sys
from sky import dag as dag_lib
from sky.client.cli import command
from sky.utils import common_utils, dag_utils
from sky.utils.registry import JOBS_RECOVERY_STRATEGY_REGISTRY
import sky.jobs.recovery_strategy  # registers the strategies

# What `sky jobs launch` does before it contacts a SkyPilot API server (sky/client/cli/command.py jobs_launch).
accepted = set(inspect.signature(command._make_task_or_dag_from_entrypoint_with_overrides).parameters)
out = {}
for path, line in json.load(open(sys.argv[1])).items():
    argv = shlex.split(line)
    assert argv[:3] == ["sky", "jobs", "launch"], argv
    params = command.jobs_launch.make_context("launch", argv[3:]).params
    cloud, region, zone = command._handle_infra_cloud_region_zone_options(
        params.get("infra"), params.get("cloud"), params.get("region"), params.get("zone"))
    args = {k: v for k, v in params.items() if k in accepted and k != "entrypoint"}
    args.update(cloud=cloud, region=region, zone=zone)
    task = command._make_task_or_dag_from_entrypoint_with_overrides(params["entrypoint"], **args)
    with dag_lib.Dag() as dag:
        dag.add(task)
    dag.name = params["name"]
    dag_utils.maybe_infer_and_fill_dag_and_task_names(dag)
    dag_utils.fill_default_config_in_dag_for_job_launch(dag)
    common_utils.check_cluster_name_is_valid(params["name"])
    resources = list(task.resources)
    for r in resources:  # the strategy must be one the jobs controller knows (it resolves it at recovery time)
        JOBS_RECOVERY_STRATEGY_REGISTRY.from_str(r.job_recovery["strategy"])
    out[path] = {
        "name": params["name"],
        "secrets": sorted(task.secrets),
        "use_spot": sorted({r.use_spot for r in resources}),
        "job_recovery": [r.job_recovery for r in resources],
        "image_ids": sorted(str(r.image_id) for r in resources),
        "accelerators": sorted(str(r.accelerators) for r in resources),
        "file_mounts": sorted((task.file_mounts or {}).items()),
        "storage_mounts": {k: [v.source, v.mode.value] for k, v in task.storage_mounts.items()},
        "run": task.run,
    }
print(json.dumps(out, default=str))
"""


def _written(tmp_path: Path, **fields) -> tuple[Path, build.Campaign]:
    fields.setdefault("engine", "skypilot")
    fields.setdefault("targets", ["h100-sxm-80gb", "l4-24gb"])
    fields.setdefault("market", "spot")
    fields.setdefault("region", None)  # any region of the cloud: a preempted job moves on to the next one
    campaign = make(tmp_path, **fields)
    folder = tmp_path / "campaigns" / campaign.manifest.name
    with working_folder(tmp_path):
        build.write_campaign(campaign, folder)
    return folder, campaign


def _sky_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_TOKEN": "hf-dummy", **extra}


def test_skypilot_parses_the_documented_command_and_every_task(tmp_path: Path) -> None:
    folder, campaign = _written(tmp_path)
    commands = {}
    for job in campaign.manifest.jobs:
        header = (folder / job.file).read_text().splitlines()[0]
        commands[job.file] = header.split(": ", 1)[1]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    result = subprocess.run([str(sky_python()), "-c", SKY_JOBS_CHECK, str(tmp_path / "commands.json")], cwd=folder,
                            env=_sky_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(verdict) == 6
    for path, v in verdict.items():
        assert v["name"] == Path(path).stem and v["secrets"] == ["HF_TOKEN"]
        assert v["use_spot"] == [True]
        assert v["job_recovery"] == [{"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 2}]
        assert v["image_ids"] == ["{'us-east-1': 'docker:vllm/vllm-openai:v0.32.0'}"] or all(
            "docker:vllm/vllm-openai:v0.32.0" in i for i in v["image_ids"])
        assert v["storage_mounts"]["/results"] == ["s3://vlmopt-test-results/campaigns/qwen-c1", "MOUNT_CACHED"]
        # checkpoints: the bucket copy, mounted as the deploy bundle's SkyServe files do
        model_mount = next(m for m in v["storage_mounts"] if m.startswith("/models/"))
        assert v["storage_mounts"][model_mount][0].startswith("s3://vlmopt-test-models/qwen/")
        assert ["/campaign/inputs", "inputs"] in v["file_mounts"]
        last = v["run"].strip().splitlines()[-1]
        argv = shlex.split(last)
        assert argv[:2] == ["/bin/sh", "/campaign/inputs/vlmopt-job.sh"]
        assert argv[2:4] == ["vlmopt", "benchmark"] and argv[-1] == "--resume"


def test_skypilot_rejects_a_broken_task(tmp_path: Path) -> None:
    """The check is real: an unknown recovery key fails SkyPilot's schema."""
    folder, campaign = _written(tmp_path, targets=["l4-24gb"], variants=["fp8"])
    (job,) = campaign.manifest.jobs
    text = (folder / job.file).read_text()
    header, body = text.split("\n", 1)
    spec = yaml.safe_load(body)
    spec["resources"]["use_spots"] = True
    (folder / job.file).write_text(header + "\n" + yaml.safe_dump(spec))
    (tmp_path / "commands.json").write_text(json.dumps({job.file: header.split(": ", 1)[1]}))
    result = subprocess.run([str(sky_python()), "-c", SKY_JOBS_CHECK, str(tmp_path / "commands.json")], cwd=folder,
                            env=_sky_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "use_spots" in result.stderr


def test_mig_targets_are_refused_for_skypilot(tmp_path: Path) -> None:
    from vlmopt.schemas.common import ContractError

    with pytest.raises(ContractError, match="SkyPilot rents whole GPUs"):
        make(tmp_path, engine="skypilot", targets=["h100-sxm-80gb:3g.40gb"])


# -- --submit through the bridge, SkyPilot's API replaced at its public functions ---------------------------------

def _fake_client(tmp_path: Path, scenario: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[SkyClient, Path]:
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    log = tmp_path / "sky-calls.jsonl"
    log.write_text("")
    monkeypatch.setenv("PYTHONPATH", str(FAKE))
    monkeypatch.setenv("VLMOPT_FAKE_SKY", str(tmp_path / "scenario.json"))
    monkeypatch.setenv("VLMOPT_FAKE_SKY_LOG", str(log))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf-dummy")
    return SkyClient(str(sky_python())), log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_submit_launches_each_job_through_skypilots_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, campaign = _written(tmp_path, targets=["l4-24gb"])
    client, log = _fake_client(tmp_path, {"clouds": ["AWS", "GCP"], "launch": {
        j.name: {"job_id": 40 + i} for i, j in enumerate(campaign.manifest.jobs)}}, monkeypatch)
    client.check_access({"aws"})
    record = build.load_campaign(folder)
    problems = submit(record, folder, Engines(sky=client), record.jobs)
    assert problems == []
    assert [(j.runs[0].object_name, j.runs[0].engine_id) for j in record.jobs] == [
        (j.name, str(40 + i)) for i, j in enumerate(record.jobs)]
    launches = [c for c in _calls(log) if c["call"] == "jobs.launch"]
    assert [c["name"] for c in launches] == [j.name for j in record.jobs]
    for call in launches:
        assert call["secrets"] == ["HF_TOKEN"] and call["use_spot"] == [True]
        assert call["storage_mounts"]["/results"] == {"source": "s3://vlmopt-test-results/campaigns/qwen-c1",
                                                      "mode": "MOUNT_CACHED"}


def test_status_of_failed_unplaced_and_preempted_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, campaign = _written(tmp_path, targets=["l4-24gb"])
    names = [j.name for j in campaign.manifest.jobs]
    queue = [
        {"job_id": 40, "job_name": names[0], "status": "FAILED", "failure_reason": "exit code 1\nTraceback...",
         "start_at": 1_800_000_000, "end_at": 1_800_000_900, "job_duration": 900.0, "recovery_count": 0},
        {"job_id": 41, "job_name": names[1], "status": "FAILED_NO_RESOURCE",
         "failure_reason": "Failed to acquire resources in all zones", "recovery_count": 0},
        {"job_id": 42, "job_name": names[2], "status": "RECOVERING", "start_at": 1_800_000_000,
         "job_duration": 1200.0, "recovery_count": 2},
    ]
    client, log = _fake_client(tmp_path, {"clouds": ["AWS"], "queue": queue,
                                          "logs": {"40": ["loading", "server died: CUDA error: out of memory"]}},
                               monkeypatch)
    record = build.load_campaign(folder)
    for job, job_id in zip(record.jobs, (40, 41, 42), strict=True):
        job.runs.append(JobRun(submitted="2027-01-15T08:00:00+00:00", object_name=job.name,
                                     engine_id=str(job_id)))
    report = collect(folder, record, folder / "results", Engines(sky=client))
    by_name = {r.job.name: r for r in report.jobs}
    failed, no_room, preempted = (by_name[n] for n in names)
    assert failed.job.outcome == "failed"
    assert failed.job.message == "FAILED: the benchmark command failed on every attempt: exit code 1"
    assert failed.lines[-1] == "server died: CUDA error: out of memory"
    assert failed.job.runs[0].gpu_hours == 0.25 and failed.job.runs[0].gpu_hours_source == "SkyPilot job_duration"
    assert no_room.job.outcome == "failed" and "no cloud had capacity" in no_room.job.message
    assert preempted.job.outcome == "running" and "recovered 2 time(s)" in preempted.job.message
    assert record.actual_gpu_hours == pytest.approx(0.25 + 1200 / 3600, abs=1e-3)
    # one status call for the whole campaign, every field asked for (the default set has no start_at)
    assert [(c["job_ids"], c["fields"]) for c in _calls(log) if c["call"] == "jobs.queue_v2"] == [([40, 41, 42], None)]
    chosen, notes = resubmittable(record)
    assert [j.name for j in chosen] == names[:2]  # the recovering one is SkyPilot's to finish
    assert any("still running" in n for n in notes)


def test_a_launch_that_fails_leaves_the_job_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, campaign = _written(tmp_path, targets=["l4-24gb"], variants=["fp8"])
    name = campaign.manifest.jobs[0].name
    client, _ = _fake_client(tmp_path, {"launch": {name: {"error": "No launchable resource found for L4 spot"}}},
                             monkeypatch)
    record = build.load_campaign(folder)
    problems = submit(record, folder, Engines(sky=client), record.jobs)
    assert problems == [f"{name}: SkyPilot: ResourcesUnavailableError: No launchable resource found for L4 spot"]
    assert record.jobs[0].runs == []
    assert [j.name for j in resubmittable(record)[0]] == [name]


def test_no_enabled_cloud_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = _fake_client(tmp_path, {"clouds": []}, monkeypatch)
    with pytest.raises(EngineError, match=r"^SkyPilot has no enabled cloud: run `sky check`"):
        client.check_access(set())
    client, _ = _fake_client(tmp_path, {"clouds": ["GCP"]}, monkeypatch)
    with pytest.raises(EngineError, match="no credentials for aws"):
        client.check_access({"aws"})
