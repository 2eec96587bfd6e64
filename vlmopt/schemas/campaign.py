"""Benchmark campaign: campaigns/<name>/campaign.json, written by `vlmopt benchmark campaign`, updated by
`--submit` and `vlmopt benchmark collect`, read by both to resume (docs/benchmark.md#campaigns).

One job per (variant, GPU, slice): a Kubernetes Job or a SkyPilot managed job that runs the same `vlmopt benchmark`
command a user runs locally and leaves its profile where the campaign's `results` location says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .catalog import Market
from .common import SCHEMA_VERSION, Provenance, StrictModel

Engine = Literal["kubernetes", "skypilot"]
JobOutcome = Literal["not_collected", "complete", "incomplete", "missing", "failed", "running", "pending"]


class CampaignTarget(StrictModel):
    """Where one job runs: a catalog GPU, whole or one MIG slice, on a market (and, on a cloud, an instance)."""

    gpu: str = Field(description="GPU catalog id (vlmopt/data/gpus.yaml)")
    slice: str = Field(default="whole", description="'whole' or a MIG profile of that GPU, e.g. '3g.40gb'")
    market: Market = "on_demand"
    cloud: str | None = Field(default=None, description="None: an existing cluster's nodes (no node pools made)")
    region: str | None = None
    instance_type: str | None = Field(default=None, description="price catalog row the node pool and price use")
    gpus_per_instance: int = 1
    why: str = Field(default="", description="how the target was chosen (--target, or which plan option)")

    @property
    def label(self) -> str:
        return f"{self.gpu}" + ("" if self.slice == "whole" else f":{self.slice}")


class ResultsLocation(StrictModel):
    """Where jobs leave their profiles: a PersistentVolumeClaim (Kubernetes) or a bucket prefix.

    Each job writes under `<root>/<job name>/`: profiles/<model>/<variant>@<device>.json (+ .requests.jsonl,
    .csv, logs/), job.log (everything the job printed) and status.json (exit code, start and end)."""

    kind: Literal["pvc", "s3", "gs"]
    claim: str | None = Field(default=None, description="pvc: the PersistentVolumeClaim's name")
    uri: str | None = Field(default=None, description="s3/gs: the bucket prefix, e.g. s3://bucket/vlmopt")
    prefix: str = Field(description="folder under the claim or bucket prefix for this campaign (its name)")

    def root_uri(self) -> str:
        """The campaign's folder as a user addresses it: 'pvc:<claim>/<prefix>' or '<uri>/<prefix>'."""
        if self.kind == "pvc":
            return f"pvc:{self.claim}/{self.prefix}"
        return f"{(self.uri or '').rstrip('/')}/{self.prefix}"


class CostEstimate(StrictModel):
    """Expected GPU time of one job: startup + points x seconds per point, priced from the price catalog."""

    startup_s: float = Field(ge=0)
    points: int = Field(ge=0)
    point_s: float = Field(ge=0)
    gpu_share: float = Field(gt=0, le=1, description="share of the GPU the job holds: 1, or a MIG slice's share")
    gpu_hours: float = Field(ge=0)
    usd_per_gpu_hour: float | None = None
    usd: float | None = None
    startup_provenance: Provenance
    duration_provenance: Provenance
    price_provenance: Provenance | None = None


class JobRun(StrictModel):
    """One submission of a job (a retried pod is the same run; a resubmission is a new run)."""

    submitted: str
    object_name: str = Field(description="Kubernetes Job name or SkyPilot managed-job name of this run")
    engine_id: str | None = Field(default=None, description="Kubernetes Job uid or SkyPilot managed job id")
    context: str | None = Field(default=None, description="kubeconfig context the Job was created in")
    state: str = Field(default="submitted", description="last state seen (collect): engine's status words")
    started: str | None = None
    finished: str | None = None
    gpu_hours: float | None = Field(default=None, ge=0, description="measured from the engine's start/end times")
    gpu_hours_source: str | None = None
    message: str | None = None


class CampaignJob(StrictModel):
    name: str = Field(description="job name: Kubernetes Job / SkyPilot job name and its folder under the results")
    variant: str
    target: CampaignTarget
    file: str = Field(description="the emitted Job / SkyPilot YAML, relative to the campaign folder")
    cluster: str | None = Field(default=None, description="Kubernetes: the cluster folder key (e.g. aws-us-east-1)")
    command: list[str] = Field(description="the `vlmopt benchmark` argv the job runs, with its in-job paths")
    estimate: CostEstimate
    runs: list[JobRun] = Field(default_factory=list)
    outcome: JobOutcome = "not_collected"
    profile: str | None = Field(default=None, description="the collected profile, relative to the campaign folder")
    message: str | None = None
    log_tail: list[str] = Field(default_factory=list, description="last lines the job printed (collect)")
    measured_startup_s: float | None = Field(
        default=None, description="container start to the first measured point (collect): a measured startup figure"
    )


class CampaignManifest(StrictModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    created: str
    vlmopt_version: str
    engine: Engine
    variant_manifest: str = Field(description="the variant manifest the campaign benchmarks (local path)")
    base_model: str
    benchmark_args: list[str] = Field(description="the benchmark options every job passes to `vlmopt benchmark`")
    image: str
    namespace: str | None = None
    results: ResultsLocation
    vlmopt_install: str = Field(description="pip requirement installed in the image at start, or 'preinstalled'")
    from_plan: str | None = None
    within_percent: float | None = None
    jobs: list[CampaignJob]
    expected_gpu_hours: float = Field(ge=0)
    expected_usd: float | None = None
    actual_gpu_hours: float | None = Field(default=None, description="sum over collected runs (collect)")
    collected: str | None = None
    notes: list[str] = Field(default_factory=list)

    def job(self, name: str) -> CampaignJob:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(f"no job {name!r} in campaign {self.name}")
