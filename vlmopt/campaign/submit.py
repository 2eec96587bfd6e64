"""`--submit`: connect to the campaign's engines (credentials and reachability checked before anything is written),
create its objects through the official clients, and record each submission in campaign.json.

Kubernetes: per cluster, the kubeconfig context given for it (`--kube-context KEY=CONTEXT`, or one context for a
campaign on one cluster). SkyPilot: its Python API in its own environment (sky.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vlmopt.emit._common import k8s_name
from vlmopt.schemas.campaign import CampaignJob, CampaignManifest, JobRun
from vlmopt.schemas.common import utc_now_iso

from .engine import ACTIVE_STATES, EngineError
from .kube import KubeClient
from .sky import SkyClient


@dataclass
class Engines:
    kube: dict[str, KubeClient] = field(default_factory=dict)
    sky: SkyClient | None = None


def parse_contexts(values: list[str], clusters: list[str]) -> dict[str, str | None]:
    """`KEY=CONTEXT` per cluster folder, or one bare CONTEXT for a one-cluster campaign; none: the current context
    (one cluster only)."""
    mapping: dict[str, str | None] = {}
    bare = [v for v in values if "=" not in v]
    for value in values:
        if "=" in value:
            key, _, ctx = value.partition("=")
            if key not in clusters:
                raise EngineError(f"--kube-context {value}: the campaign has no cluster {key!r} (it has "
                                  f"{', '.join(clusters)})")
            mapping[key] = ctx
    if bare:
        if len(bare) > 1 or len(clusters) > 1:
            raise EngineError(f"the campaign spans clusters {', '.join(clusters)}: give --kube-context KEY=CONTEXT "
                              "for each")
        mapping[clusters[0]] = bare[0]
    if len(clusters) > 1:
        missing = [c for c in clusters if c not in mapping]
        if missing:
            raise EngineError(f"the campaign spans clusters {', '.join(clusters)}: give --kube-context "
                              f"{missing[0]}=CONTEXT (and one for each other cluster)")
    return {c: mapping.get(c) for c in clusters}


def connect(record: CampaignManifest, contexts: list[str], kubeconfig: str | None, sky_python: str | None,
            check_results: bool = True) -> Engines:
    """Clients for every engine the campaign uses, each checked with one cheap call. Raises EngineError."""
    if record.engine == "skypilot":
        client = SkyClient(sky_python)
        client.check_access({j.target.cloud for j in record.jobs if j.target.cloud})
        return Engines(sky=client)
    clusters = sorted({j.cluster for j in record.jobs if j.cluster})
    engines = Engines()
    for key, ctx in parse_contexts(contexts, clusters).items():
        client = KubeClient(kubeconfig, ctx)
        client.check_access(record.namespace or "default")
        engines.kube[key] = client
    if check_results and record.results.kind == "pvc":
        for key, client in engines.kube.items():
            modes = client.claim_access_modes(record.namespace or "default", record.results.claim or "")
            jobs = [j for j in record.jobs if j.cluster == key]
            if len(jobs) > 1 and "ReadWriteMany" not in modes:
                raise EngineError(
                    f"results PVC {record.results.claim} in {key} is {', '.join(modes) or 'of unknown access mode'}: "
                    f"{len(jobs)} jobs on different nodes cannot all mount it; use a ReadWriteMany claim (EFS, "
                    "Filestore, NFS) or a bucket")
    return engines


def _documents(folder: Path, path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((folder / path).read_text()) if isinstance(d, dict)]


def object_name(job: CampaignJob) -> str:
    """The first submission uses the job's name; a resubmission gets a suffix (the failed Job may still exist)."""
    attempt = len(job.runs) + 1
    return job.name if attempt == 1 else k8s_name(job.name, f"r{attempt}")


def submit(record: CampaignManifest, folder: Path, engines: Engines, jobs: list[CampaignJob]) -> list[str]:
    """Submit `jobs`; each success appends a JobRun. Returns one line per job that could not be submitted."""
    problems: list[str] = []
    if record.engine == "skypilot":
        assert engines.sky is not None
        for job in jobs:
            try:
                job_id, missing = engines.sky.launch(folder / job.file, job.name, folder)
            except EngineError as exc:
                problems.append(f"{job.name}: {exc}")
                continue
            message = f"secrets not in the environment: {', '.join(missing)}" if missing else None
            job.runs.append(JobRun(submitted=utc_now_iso(), object_name=job.name, engine_id=str(job_id),
                                   message=message))
        return problems
    namespace = record.namespace or "default"
    prepared: set[str] = set()
    for job in jobs:
        client = engines.kube[job.cluster or ""]
        try:
            if job.cluster not in prepared:
                base = f"clusters/{job.cluster}/kubernetes/00-campaign.yaml"
                for doc in _documents(folder, base):
                    client.apply(doc)
                download = folder / f"clusters/{job.cluster}/kubernetes/01-model-download.yaml"
                if download.is_file():
                    for doc in _documents(folder, str(download.relative_to(folder))):
                        client.apply(doc)
                prepared.add(job.cluster or "")
            (doc,) = _documents(folder, job.file)
            name = object_name(job)
            if job.runs:
                client.delete_job(namespace, job.runs[-1].object_name)
            doc["metadata"]["name"] = name
            outcome = client.apply(doc)
        except EngineError as exc:
            problems.append(f"{job.name}: {exc}")
            continue
        if outcome == "exists":
            problems.append(f"{job.name}: Job/{name} already exists in {namespace} (submitted before, outside "
                            "this campaign.json?); delete it or let `--resume` pick the jobs to run")
            continue
        uid = outcome.split(" ", 1)[1] if outcome.startswith("created ") else None
        job.runs.append(JobRun(submitted=utc_now_iso(), object_name=name, engine_id=uid, context=client.context))
    return problems


def resubmittable(record: CampaignManifest) -> tuple[list[CampaignJob], list[str]]:
    """Jobs to (re)submit on --resume: never submitted, or collected as missing, failed or incomplete; jobs still
    running or pending are left alone. (jobs, notes)"""
    chosen: list[CampaignJob] = []
    notes: list[str] = []
    for job in record.jobs:
        if not job.runs:
            chosen.append(job)
        elif job.outcome == "complete":
            notes.append(f"{job.name}: complete, not resubmitted")
        elif job.outcome in ("running", "pending") or (job.outcome == "not_collected"
                                                         and job.runs[-1].state in ACTIVE_STATES):
            notes.append(f"{job.name}: still {job.outcome if job.outcome != 'not_collected' else 'submitted'}, "
                         "not resubmitted")
        else:
            chosen.append(job)
    return chosen, notes
