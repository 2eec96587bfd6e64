"""Plan: deploy/<plan>/plan.json, written by `vlmopt plan`, read by the emitters and the report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .catalog import Market
from .common import SCHEMA_VERSION, Provenance, StrictModel
from .profile import ServerArgs


class HostSizing(StrictModel):
    """What one replica needs from the host CPU at its planned load. The planner fills it from the host-side terms of
    the performance model (image preprocessing in vLLM's API server processes, tokenisation, engine scheduling); the
    deploy bundle turns it into `--api-server-count` and the pod's CPU/memory requests."""

    api_server_count: int = Field(ge=1, description="vLLM API server processes (--api-server-count)")
    cpu_cores: float = Field(gt=0, description="cores the replica's host processes need at the planned request rate")
    memory_gib: float | None = Field(default=None, ge=0, description="host RAM the replica needs, if known")
    preprocess_ms_per_image: float | None = Field(default=None, ge=0)
    provenance: Provenance


class Replica(StrictModel):
    """One vLLM server on one slice (whole GPU or MIG instance), TP=1 on MIG."""

    service: str
    variant: str
    slice: str = Field(description="'whole' or a MIG profile name such as '3g.40gb'")
    mig_start: int | None = None
    server_args: ServerArgs
    capacity_rps: float = Field(ge=0, description="req/s this replica sustains at the SLO")
    capacity_provenance: Provenance
    capacity_low_rps: float | None = Field(default=None, ge=0, description="low end of the capacity's error band")
    capacity_high_rps: float | None = Field(default=None, ge=0, description="high end of the capacity's error band")
    capacity_band: str | None = Field(default=None, description="how the band was derived (docs/cost-model.md)")
    kv_token_capacity: int | None = None
    memory_gib: dict[str, float] | None = Field(
        default=None, description="breakdown on the slice: weights, kv_cache, reserve, total, usable"
    )
    host: HostSizing | None = Field(default=None, description="host CPU needs; None = not modelled (older plans)")


class GpuAssignment(StrictModel):
    """One physical GPU in a node group: its MIG layout (or none) and the replicas on it."""

    mig_layout: list[str] | None = Field(default=None, description="profile names in creation order; None = no MIG")
    mig_placements: list[int] | None = None
    replicas: list[Replica]


class NodeGroup(StrictModel):
    name: str
    gpu: str = Field(description="GpuSpec.id")
    cloud: str | None = None
    region: str | None = None
    instance_type: str | None = None
    market: Market
    gpus_per_instance: int = 1
    instances: int = Field(ge=0)
    gpu_layout: GpuAssignment = Field(description="the layout every GPU of this group gets")
    usd_per_hour: float = Field(ge=0, description="all instances of the group")
    price_provenance: Provenance


class Lever(StrictModel):
    name: Literal["quantization", "mig_packing", "spot", "other"]
    usd_per_hour_saved: float
    explanation: str


class CostSummary(StrictModel):
    usd_per_hour: float
    usd_per_month: float
    usd_per_million_output_tokens: float | None = None
    usd_per_thousand_images: float | None = None
    expected_usd_per_hour: float | None = Field(default=None, description="with spot replacements")
    worst_case_usd_per_hour: float | None = None


class ServicePlan(StrictModel):
    service: str
    model: str
    variant: str
    why: str
    required_rps: float
    provided_rps: float
    replicas: int
    availability: float | None = None
    fidelity: dict[str, float] | None = None
    slo: dict[str, float] = Field(
        default_factory=dict, description="the service's SLO from the workload (Slo.as_dict()), for alert rules"
    )


class Candidate(StrictModel):
    """One (service, variant, GPU, slice, market) option the optimizer considered; for the report."""

    service: str
    variant: str
    gpu: str
    slice: str
    market: Market
    fits: bool
    meets_slo: bool
    capacity_rps: float
    capacity_low_rps: float | None = None
    capacity_high_rps: float | None = None
    capacity_band: str | None = None
    usd_per_hour_per_replica: float | None = None
    p95_latency_ms: float | None = None
    usd_per_million_output_tokens: float | None = None
    reason: str = ""
    provenance: Provenance


class RobustPlanning(StrictModel):
    """A robust plan (`vlmopt plan --robust`): sized so the SLO holds with every capacity at the low end of its error
    band; the nominal plan (every capacity at its central figure) is solved too, for comparison."""

    capacity: Literal["low"] = Field(default="low", description="which end of each band the plan was sized at")
    usd_per_hour: float = Field(description="the robust plan's $/h (the plan's cost)")
    nominal_usd_per_hour: float = Field(description="the plan at the central capacities")
    extra_usd_per_hour: float = Field(description="what robustness costs: robust - nominal")
    nominal_gpus: int = Field(ge=0)
    robust_gpus: int = Field(ge=0)
    nominal_replicas: dict[str, int] = Field(default_factory=dict, description="per service, in the nominal plan")
    nominal_variants: dict[str, str] = Field(default_factory=dict, description="per service, in the nominal plan")


class Baseline(StrictModel):
    description: str = "bf16, whole GPUs, on-demand"
    cost: CostSummary
    node_groups: list[NodeGroup] = Field(default_factory=list)


class Plan(StrictModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    mode: Literal["cloud", "fleet"]
    created: str
    workload: str = Field(description="path or 'bundled:<name>'")
    services: list[ServicePlan]
    node_groups: list[NodeGroup]
    cost: CostSummary
    baseline: Baseline | None = None
    levers: list[Lever] = Field(default_factory=list)
    binding_constraints: list[str] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    inputs: list[Provenance] = Field(default_factory=list, description="every input: measured/estimated/catalog")
    solver: dict[str, str | float | int] = Field(default_factory=dict)
    availability_target: float = 0.999
    notes: list[str] = Field(default_factory=list)
    robust: RobustPlanning | None = Field(default=None, description="set when planned with --robust")
