"""`--submit` and `collect` on Kubernetes, through the real `kubernetes` client against a local API server
(tests/unit/k8s_api.py): objects created as emitted, a resubmission replacing a failed Job, and one clear line per
job for a success, a failure after retries, a pod pending forever, a spot preemption and bad input; credentials
missing, refused or unreachable stop before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.campaign_fixtures import make, working_folder
from tests.unit.k8s_api import recorded, serve
from vlmopt.campaign import build
from vlmopt.campaign.collect import collect
from vlmopt.campaign.engine import EngineError
from vlmopt.campaign.kube import KubeClient
from vlmopt.campaign.submit import Engines, connect, resubmittable, submit
from vlmopt.schemas import BenchmarkProfile, DeviceInfo, EngineInfo, LoadPoint, WorkloadSpec, save_model

NS = "vlmopt"
JOBS = "/apis/batch/v1/namespaces/vlmopt/jobs"
PODS = "/api/v1/namespaces/vlmopt/pods"
SUCCEEDED, BACKOFF, PENDING = "qwen-c1-fp8-l4-24gb", "qwen-c1-bf16-l4-24gb", "qwen-c1-fp8-h100-sxm-80gb-3g-40gb"
PREEMPTED, BAD_INPUT, UNSTARTED = ("qwen-c1-awq-h100-sxm-80gb-3g-40gb", "qwen-c1-bf16-h100-sxm-80gb-3g-40gb",
                                   "qwen-c1-awq-l4-24gb")


def _folder(tmp_path: Path, **fields) -> Path:
    campaign = make(tmp_path, **fields)
    folder = tmp_path / "campaigns" / "qwen-c1"
    with working_folder(tmp_path):
        build.write_campaign(campaign, folder)
    return folder


def _profile(variant: str, device: DeviceInfo, complete: bool = True, points: int = 3) -> BenchmarkProfile:
    return BenchmarkProfile(
        model="Qwen2.5-VL-3B-Instruct", variant=variant, device=device, engine=EngineInfo(version="0.32.0"),
        workload=WorkloadSpec(input_tokens=64, output_tokens=32), complete=complete, run_id=f"run-{variant}",
        points=[LoadPoint(label=f"c{c}", completed=64, request_throughput=float(c), p95_ttft_ms=100.0 * c,
                          started=f"2026-11-20T08:{10 + i:02d}:00+00:00") for i, c in enumerate((1, 4, 16)[:points])],
        campaign_job=f"qwen-c1/{variant}")


def _results(folder: Path, job: str, profile: BenchmarkProfile | None, exit_code: int | None, log: list[str]) -> None:
    job_dir = folder / "results" / job
    (job_dir / "profiles").mkdir(parents=True, exist_ok=True)
    if profile is not None:
        save_model(profile, job_dir / "profiles" / profile.model / f"{profile.variant}@{profile.device.slug()}.json")
    finished = None if exit_code is None else '"2026-11-20T08:31:37Z"'
    (job_dir / "status.json").write_text(
        f'{{"job": "qwen-c1/{job}", "state": "{"running" if exit_code is None else "exited"}", "exit_code": '
        f'{"null" if exit_code is None else exit_code}, "started": "2026-11-20T08:05:04Z", "finished": '
        f'{finished or "null"}, "host": "pod"}}\n')
    (job_dir / "job.log").write_text("\n".join(log) + "\n")


def test_submit_creates_the_emitted_objects_and_records_each_run(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with serve(tmp_path) as (api, kubeconfig):
        record = build.load_campaign(folder)
        engines = connect(record, [], str(kubeconfig), None)
        assert submit(record, folder, engines, record.jobs) == []
        [namespace] = api.posted("/api/v1/namespaces")
        assert namespace["metadata"]["name"] == NS
        [inputs] = api.posted(f"/api/v1/namespaces/{NS}/configmaps")
        assert set(inputs["data"]) == {"manifest.json", "vlmopt-job.sh"}
        assert [sc["metadata"]["name"] for sc in api.posted("/apis/storage.k8s.io/v1/storageclasses")] == ["vlmopt-rwo"]
        created = api.posted(JOBS)
        assert [j["metadata"]["name"] for j in created] == [j.name for j in record.jobs]
        for body, job in zip(created, record.jobs, strict=True):
            (emitted,) = [d for d in yaml.safe_load_all((folder / job.file).read_text()) if d]
            assert body == json.loads(json.dumps(emitted))  # what the API server got is the file, unchanged
            run = job.runs[0]
            assert run.object_name == job.name and run.context == "bench" and run.engine_id
    saved = build.load_campaign(folder)  # the CLI saves after submit; here the record in memory carries the runs
    assert all(not j.runs for j in saved.jobs)


def _scenario(api, record) -> None:
    cases = {SUCCEEDED: "succeeded", BACKOFF: "failed_backoff", PENDING: "pending", PREEMPTED: "preempted",
             BAD_INPUT: "bad_input"}
    for job, case in cases.items():
        api.add(f"{JOBS}/{job}", recorded(f"job_{case}"))
        api.add(f"{PODS}?job={job}", recorded(f"pods_{case}"))
    api.logs[f"{PODS}/{BACKOFF}-g5h6i/log"] = "INFO loading weights\nERROR server died: CUDA out of memory\n"
    api.logs[f"{PODS}/{BAD_INPUT}-s5t6u/log"] = "error: --slo: unknown key 'ttft_p99_ms'\n"


def test_collect_reports_each_outcome_in_one_line_with_its_log_tail(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    l4, h100_3g = (DeviceInfo(kind="gpu", name="NVIDIA L4", catalog_id="l4-24gb"),
                   DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", mig_profile="3g.40gb",
                              catalog_id="h100-sxm-80gb"))
    _results(folder, SUCCEEDED, _profile("fp8", l4), 0, ["[vlmopt-job] exit code 0"])
    _results(folder, PREEMPTED, _profile("awq", h100_3g, complete=False, points=1), None, ["running c4"])
    with serve(tmp_path) as (api, kubeconfig):
        record = build.load_campaign(folder)
        engines = connect(record, ["bench"], str(kubeconfig), None)
        submit(record, folder, engines, record.jobs)
        _scenario(api, record)
        report = collect(folder, record, folder / "results", engines)
    jobs = {r.job.name: r for r in report.jobs}

    ok = jobs[SUCCEEDED].job
    assert ok.outcome == "complete" and ok.profile == f"profiles/Qwen2.5-VL-3B-Instruct/fp8@{l4.slug()}.json"
    stored = json.loads((folder / ok.profile).read_text())
    assert stored["manifest"] == str((tmp_path / "variants/qwen2.5-vl-3b/manifest.json").resolve())
    assert ok.runs[0].gpu_hours == pytest.approx((30 * 60 + 8) / 3600, abs=1e-3)  # scheduled 08:01:30, end 08:31:38
    assert ok.measured_startup_s == pytest.approx(5 * 60 - 4)  # container start 08:05:04, first point 08:10:00

    failed = jobs[BACKOFF]
    assert failed.job.outcome == "failed"
    assert failed.job.message == ("BackoffLimitExceeded: every attempt failed (3 pods); last pod: exit code 137 "
                                  "(OOMKilled)")
    assert failed.lines == ["INFO loading weights", "ERROR server died: CUDA out of memory"]
    attempts_s = (16 * 60 + 32) + (21 * 60 + 41) + (21 * 60 + 30)  # three pods, scheduling to exit
    assert failed.job.runs[0].gpu_hours == pytest.approx(attempts_s / 3600, abs=1e-3)

    pending = jobs[PENDING].job
    assert pending.outcome == "pending"
    assert pending.message.startswith(f"pod {PENDING}-q8w7e pending: Unschedulable for ")
    assert "3 Insufficient nvidia.com/mig-3g.40gb" in pending.message
    assert pending.runs[0].gpu_hours == 0.0  # never scheduled: no GPU held

    preempted = jobs[PREEMPTED].job
    assert preempted.outcome == "running"
    assert "1 pod(s) preempted or evicted and retried (TerminationByKubelet: Pod was terminated in response to " \
           "imminent node shutdown.)" in preempted.message

    bad = jobs[BAD_INPUT]
    assert bad.job.outcome == "failed" and bad.job.message.startswith("PodFailurePolicy: exit code 2: bad input")
    assert bad.lines == ["error: --slo: unknown key 'ttft_p99_ms'"]

    assert jobs[UNSTARTED].job.outcome == "pending" and "no pod yet" in jobs[UNSTARTED].job.message
    assert record.actual_gpu_hours is not None and record.actual_gpu_hours > ok.runs[0].gpu_hours
    on_disk = build.load_campaign(folder)
    assert on_disk.job(BACKOFF).outcome == "failed" and on_disk.collected

    # resume: only what failed is resubmitted; running and pending jobs are left to finish
    chosen, _notes = resubmittable(on_disk)
    assert sorted(j.name for j in chosen) == sorted([BACKOFF, BAD_INPUT])
    with serve(tmp_path) as (api, kubeconfig):
        api.add(f"{JOBS}/{BACKOFF}", recorded("job_failed_backoff"))
        engines = connect(on_disk, [], str(kubeconfig), None)
        assert submit(on_disk, folder, engines, chosen) == []
        deleted = [path for method, path, _ in api.requests if method == "DELETE"]
        assert sorted(deleted) == sorted([f"{JOBS}/{BACKOFF}", f"{JOBS}/{BAD_INPUT}"])
        names = [j["metadata"]["name"] for j in api.posted(JOBS)]
    assert sorted(names) == sorted([f"{BACKOFF}-r2", f"{BAD_INPUT}-r2"])
    resubmitted = on_disk.job(BACKOFF)
    assert len(resubmitted.runs) == 2 and resubmitted.runs[-1].object_name == f"{BACKOFF}-r2"


def test_a_rwo_results_claim_is_refused_for_parallel_jobs(tmp_path: Path) -> None:
    folder = _folder(tmp_path, cloud=None, region=None, results="pvc:bench-results",
                     settings=_models_settings())
    with serve(tmp_path) as (api, kubeconfig):
        api.add(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/bench-results", recorded("pvc_rwo"))
        record = build.load_campaign(folder)
        with pytest.raises(EngineError, match="is ReadWriteOnce: 6 jobs on different nodes cannot all mount it"):
            connect(record, [], str(kubeconfig), None)
        api.add(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/bench-results", recorded("pvc_rwx"))
        assert connect(record, [], str(kubeconfig), None).kube


def test_a_missing_results_claim_is_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, cloud=None, region=None, results="pvc:bench-results", settings=_models_settings())
    with serve(tmp_path) as (_, kubeconfig), pytest.raises(
            EngineError, match=r"^results PVC bench-results does not exist in namespace vlmopt"):
        connect(build.load_campaign(folder), [], str(kubeconfig), None)


def _models_settings():
    from tests.unit.campaign_fixtures import settings

    return settings(models={f"variants/qwen2.5-vl-3b/{v}": f"Org/qwen-{v}" for v in ("bf16", "fp8", "awq")})


def test_credentials_missing_refused_or_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(EngineError, match=r"^no Kubernetes credentials: .*nowhere"):
        KubeClient(str(tmp_path / "nowhere"))
    with serve(tmp_path) as (api, kubeconfig):
        api.refuse = 401
        with pytest.raises(EngineError, match=r"refused the credentials \(401"):
            KubeClient(str(kubeconfig)).check_access(NS)
    client = KubeClient(str(kubeconfig))  # the server is gone now
    with pytest.raises(EngineError, match="cannot reach the Kubernetes API server"):
        client.check_access(NS)


def test_several_clusters_need_a_context_each(tmp_path: Path) -> None:
    from vlmopt.campaign.submit import parse_contexts

    assert parse_contexts([], ["aws-us-east-1"]) == {"aws-us-east-1": None}
    assert parse_contexts(["prod"], ["aws-us-east-1"]) == {"aws-us-east-1": "prod"}
    with pytest.raises(EngineError, match="give --kube-context gcp-us-east4=CONTEXT"):
        parse_contexts(["aws-us-east-1=eks"], ["aws-us-east-1", "gcp-us-east4"])
    with pytest.raises(EngineError, match="no cluster 'azure'"):
        parse_contexts(["azure=x"], ["aws-us-east-1"])


def test_engines_without_submission_are_not_needed_to_collect(tmp_path: Path) -> None:
    """Files only (applied by hand, or never): collect still reads the results folder."""
    folder = _folder(tmp_path, targets=["l4-24gb"], variants=["fp8"])
    l4 = DeviceInfo(kind="gpu", name="NVIDIA L4", catalog_id="l4-24gb")
    _results(folder, SUCCEEDED, _profile("fp8", l4), 0, ["done"])
    report = collect(folder, build.load_campaign(folder), folder / "results", Engines())
    assert [r.job.outcome for r in report.jobs] == ["complete"] and report.complete
