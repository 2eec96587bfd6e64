"""`vlmopt benchmark collect`: bring every job's results home (a local copy of the PVC's folder, or the bucket
through the cloud's CLI), validate each profile against the schema, check it was measured on the job's target, put
the good ones under `<campaign>/profiles/` for `vlmopt plan --profiles`, and say for every other job why it has
none, with its log tail. Actual GPU-hours come from the engines' start and end times (docs/benchmark.md#campaigns).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.bench.device import with_catalog_id
from vlmopt.schemas.campaign import CampaignJob, CampaignManifest, JobRun
from vlmopt.schemas.common import ContractError, atomic_write_text, load_model, save_model, utc_now_iso
from vlmopt.schemas.profile import BenchmarkProfile

from . import command as cmd
from .build import CAMPAIGN_FILE, PROFILES_DIR, RESULTS_DIR
from .cost import hours_between, parse_time
from .engine import EngineError
from .kube import gpu_seconds
from .kubernetes import BENCHMARK_CONTAINER
from .sky import SkyJob
from .submit import Engines

LOG_TAIL_LINES = 15


@dataclass
class JobReport:
    job: CampaignJob
    lines: list[str] = field(default_factory=list)  # log tail shown for jobs without a complete profile


@dataclass
class CollectReport:
    record: CampaignManifest
    jobs: list[JobReport]
    notes: list[str]

    @property
    def complete(self) -> bool:
        return all(r.job.outcome == "complete" for r in self.jobs)


def download_results(record: CampaignManifest, folder: Path) -> Path:
    """Bucket results: `aws s3 sync` / `gcloud storage rsync` of the campaign's prefix into <campaign>/results."""
    dest = folder / RESULTS_DIR
    dest.mkdir(parents=True, exist_ok=True)
    uri = record.results.root_uri()
    if record.results.kind == "s3":
        argv = ["aws", "s3", "sync", "--no-progress", uri, str(dest)]
    else:
        argv = ["gcloud", "storage", "rsync", "--recursive", uri, str(dest)]
    if shutil.which(argv[0]) is None:
        raise EngineError(f"{argv[0]} not found: install the cloud CLI, or copy {uri} yourself and pass --from DIR")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"{' '.join(argv[:3])} {uri}: {tail}")
    return dest


def copy_results(source: Path, folder: Path, record: CampaignManifest) -> Path:
    """A local copy of the campaign's folder (PVC via `kubectl cp`, a mount, a bucket copy): each job's folder
    is copied into <campaign>/results."""
    if not source.is_dir():
        raise ContractError(f"--from {source}: not a folder")
    dest = folder / RESULTS_DIR
    for job in record.jobs:
        if (source / job.name).is_dir() and (source / job.name).resolve() != (dest / job.name).resolve():
            shutil.copytree(source / job.name, dest / job.name, dirs_exist_ok=True)
    return dest


def _read_status(job_dir: Path) -> dict | None:
    try:
        return json.loads((job_dir / cmd.STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _log_tail(job_dir: Path, lines: int) -> list[str]:
    try:
        return (job_dir / cmd.LOG_FILE).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _target_slice(profile: BenchmarkProfile) -> tuple[str | None, str]:
    device = with_catalog_id(profile.device)
    return device.catalog_id, device.mig_profile or "whole"


def _profiles(job: CampaignJob, job_dir: Path) -> tuple[BenchmarkProfile | None, Path | None, list[str]]:
    """The job's profile (the most complete one measured on its target), and what was wrong with the others."""
    problems: list[str] = []
    found: list[tuple[BenchmarkProfile, Path]] = []
    for path in sorted((job_dir / cmd.PROFILES_DIR).rglob("*@*.json")):
        try:
            profile = load_model(BenchmarkProfile, path)
        except ContractError as exc:
            problems.append(f"invalid profile: {exc}")
            continue
        gpu, slice_name = _target_slice(profile)
        if profile.variant != job.variant or (gpu, slice_name) != (job.target.gpu, job.target.slice):
            where = f"{gpu or profile.device.name}" + ("" if slice_name == "whole" else f":{slice_name}")
            problems.append(f"{path.name}: measured {profile.variant} on {where}, the job is {job.variant} on "
                            f"{job.target.label}: not used")
            continue
        found.append((profile, path))
    if not found:
        return None, None, problems
    profile, path = max(found, key=lambda fp: (fp[0].complete, len(fp[0].points)))
    return profile, path, problems


def _store_profile(profile: BenchmarkProfile, source: Path, folder: Path, record: CampaignManifest) -> Path:
    """Into <campaign>/profiles/<model>/: the profile (its `manifest` pointing at the local variant manifest, so
    the planner matches it to the manifest's services) and its per-request and CSV files."""
    dest_dir = folder / PROFILES_DIR / profile.model
    dest = dest_dir / source.name
    local = profile.model_copy(update={"manifest": str(Path(record.variant_manifest).resolve())})
    save_model(local, dest)
    for sibling in (source.with_name(source.stem + ".requests.jsonl"), source.with_suffix(".csv")):
        if sibling.is_file():
            atomic_write_text(dest_dir / sibling.name, sibling.read_text())
    return dest


def _startup_s(status: dict | None, profile: BenchmarkProfile | None) -> float | None:
    """Container start to the first measured point: what --startup-minutes stands for (image pull and download
    excluded: they happen before the container starts)."""
    if not status or not profile or not profile.points:
        return None
    start, first = parse_time(status.get("started")), parse_time(profile.points[0].started)
    if start is None or first is None or first < start:
        return None
    return round((first - start).total_seconds(), 1)


def _engine_state(job: CampaignJob, run: JobRun, engines: Engines, record: CampaignManifest,
                  notes: list[str], sky_jobs: dict[int, SkyJob]) -> list[str]:
    """Refresh `run` from the engine; returns the engine's log tail (empty when unavailable)."""
    share = job.estimate.gpu_share
    try:
        if record.engine == "kubernetes":
            client = engines.kube.get(job.cluster or "")
            if client is None:
                return []
            view = client.job(record.namespace or "default", run.object_name)
            run.state, run.message = view.state, view.message
            if view.state == "gone":
                return []
            run.started, run.finished = view.started, view.finished
            seconds = gpu_seconds(view)
            if view.pods:
                run.gpu_hours = round(seconds / 3600 * share, 4)
                run.gpu_hours_source = "pods' scheduling to container end (Kubernetes API)"
            last = view.pods[-1] if view.pods else None
            return client.log_tail(record.namespace or "default", last.name, BENCHMARK_CONTAINER,
                                   LOG_TAIL_LINES) if last else []
        if engines.sky is None or run.engine_id is None:
            return []
        sky_job = sky_jobs.get(int(run.engine_id))
        if sky_job is None:
            run.state, run.message = "unknown", "SkyPilot no longer lists this job"
            return []
        run.state, run.message = sky_job.state, sky_job.message
        run.started, run.finished = sky_job.started, sky_job.finished
        if sky_job.duration_s is not None:
            run.gpu_hours = round(float(sky_job.duration_s) / 3600 * share, 4)
            run.gpu_hours_source = "SkyPilot job_duration"
        return engines.sky.log_tail(sky_job.job_id, LOG_TAIL_LINES) if sky_job.state != "pending" else []
    except EngineError as exc:
        notes.append(f"{job.name}: {exc}")
        return []


def collect_job(job: CampaignJob, results: Path, folder: Path, record: CampaignManifest, engines: Engines | None,
                notes: list[str], sky_jobs: dict[int, SkyJob] | None = None) -> JobReport:
    job_dir = results / job.name
    status = _read_status(job_dir)
    profile, path, problems = _profiles(job, job_dir)
    engine_tail: list[str] = []
    run = job.runs[-1] if job.runs else None
    if run is not None and engines is not None:
        engine_tail = _engine_state(job, run, engines, record, notes, sky_jobs or {})
    if run is not None and run.gpu_hours is None and status and status.get("finished"):
        run.gpu_hours = hours_between(status.get("started"), status.get("finished"), job.estimate.gpu_share)
        run.gpu_hours_source = "the job's own start/end (status.json; last attempt, without image pull/download)"
    job.measured_startup_s = _startup_s(status, profile)
    tail = engine_tail or _log_tail(job_dir, LOG_TAIL_LINES)
    job.log_tail = tail
    state = run.state if run else None
    exit_code = status.get("exit_code") if status else None
    if profile is not None and path is not None:
        job.profile = str(_store_profile(profile, path, folder, record).relative_to(folder))
    if profile is not None and profile.complete:
        job.outcome, job.message = "complete", f"{len(profile.points)} points, run {profile.run_id}"
    elif state in ("running", "pending", "recovering", "submitted"):
        job.outcome = "pending" if state in ("pending", "submitted") else "running"
        job.message = run.message if run and run.message else state
    elif profile is not None:
        why = profile.incomplete_reason or "the run did not finish"
        job.outcome, job.message = "incomplete", f"{len(profile.points)} points saved ({why}); --resume continues it"
    elif state == "failed" or (exit_code not in (None, 0)):
        job.outcome = "failed"
        job.message = (run.message if run and run.message and state == "failed"
                       else f"the job exited with code {exit_code}")
    else:
        job.outcome = "missing"
        if run is None:
            job.message = "never submitted"
        elif not job_dir.is_dir():
            job.message = f"nothing in {RESULTS_DIR}/{job.name}" + (f" ({run.message})" if run.message else "")
        else:
            job.message = "no profile written" + (f" ({run.message})" if run.message else "")
    if problems:
        job.message = f"{job.message}; " + "; ".join(problems)
    return JobReport(job, tail if job.outcome != "complete" else [])


def collect(folder: Path, record: CampaignManifest, results: Path, engines: Engines | None) -> CollectReport:
    """Fill outcomes, profiles, runs and GPU-hours into `record` and save it (campaign.json, atomically)."""
    notes: list[str] = []
    sky_jobs: dict[int, SkyJob] = {}
    if engines is not None and engines.sky is not None:
        ids = [int(j.runs[-1].engine_id) for j in record.jobs if j.runs and j.runs[-1].engine_id]
        try:
            sky_jobs = engines.sky.jobs(ids)  # one call for every job: each call starts SkyPilot's client
        except EngineError as exc:
            notes.append(str(exc))
    reports = [collect_job(job, results, folder, record, engines, notes, sky_jobs) for job in record.jobs]
    hours = [r.gpu_hours for j in record.jobs for r in j.runs if r.gpu_hours is not None]
    record.actual_gpu_hours = round(sum(hours), 4) if hours else None
    record.collected = utc_now_iso()
    save_model(record, folder / CAMPAIGN_FILE)
    return CollectReport(record, reports, notes)
