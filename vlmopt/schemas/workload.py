"""Workload: what the user asks `vlmopt plan` to serve."""

from __future__ import annotations

from pydantic import Field, model_validator

from .catalog import Market
from .common import SCHEMA_VERSION, StrictModel
from .deploy import DeploySettings


class Slo(StrictModel):
    ttft_p50_ms: float | None = Field(default=None, gt=0)
    ttft_p95_ms: float | None = Field(default=None, gt=0)
    tpot_p95_ms: float | None = Field(default=None, gt=0)
    e2el_p50_ms: float | None = Field(default=None, gt=0)
    e2el_p95_ms: float | None = Field(default=None, gt=0)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class QualityFloor(StrictModel):
    max_kl: float | None = Field(default=None, ge=0)
    min_top1_agreement: float | None = Field(default=None, ge=0, le=1)


class Service(StrictModel):
    name: str
    model: str = Field(description="bundled model spec id (vlmopt/data/models/*.yaml) or a model folder")
    manifest: str | None = Field(
        default=None, description="variant manifest (vlmopt quantize output); relative paths from the workload file"
    )
    variants: list[str] | None = Field(default=None, description="allowed variants; None = all known")
    peak_rps: float = Field(gt=0)
    mean_rps: float | None = Field(default=None, gt=0)
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)
    images_per_request: int = Field(default=1, ge=0)
    image_size: tuple[int, int] = (448, 448)
    max_model_len: int = Field(default=8192, ge=16)
    slo: Slo
    quality: QualityFloor = Field(default_factory=QualityFloor)
    response_cache_hit_rate: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _mean_below_peak(self) -> Service:
        if self.mean_rps is not None and self.mean_rps > self.peak_rps:
            raise ValueError(f"mean_rps {self.mean_rps} exceeds peak_rps {self.peak_rps}")
        if not self.slo.as_dict():
            raise ValueError(f"slo: set at least one latency objective ({', '.join(Slo.model_fields)})")
        return self


class SpotAssumptions(StrictModel):
    """Inputs of the spot availability model (vlmopt/plan/spot.py). Defaults are stated assumptions, not measurements:
    override them with figures from your cloud (e.g. the AWS Spot Instance Advisor's interruption band)."""

    interruption_rate_per_hour: float = Field(
        default=0.02, ge=0, description="independent interruptions per spot GPU instance-hour (price rows may override)"
    )
    recovery_hours: float = Field(
        default=1 / 6, gt=0, description="time to replace an interrupted replica: launch, image pull, model load"
    )
    zone_loss_rate_per_hour: float = Field(
        default=0.002, ge=0, description="rate at which one zone's whole spot capacity of a GPU type goes at once"
    )
    zone_recovery_hours: float = Field(
        default=0.5, gt=0, description="time until the lost zone's load runs elsewhere (on-demand fallback)"
    )
    zones: int = Field(default=3, ge=1, le=8, description="zones the spot replicas are spread over")


class OnDemandAssumptions(StrictModel):
    """How often an on-demand replica's instance is down (vlmopt/plan/sla.py). By default the cloud's single-instance
    SLA: a floor the provider commits to, not a measured failure rate (docs/cost-model.md#on-demand-instances)."""

    instance_unavailability: float | None = Field(
        default=None, ge=0, lt=1,
        description="share of time one on-demand instance is down; None: the cloud's single-instance SLA (cloud "
                    "mode), not modelled for your own GPUs (fleet mode)")


class Constraints(StrictModel):
    availability: float = Field(default=0.999, gt=0, lt=1)
    headroom: float = Field(default=0.2, ge=0)
    clouds: list[str] | None = None
    gpus: list[str] | None = None
    markets: list[Market] = Field(default_factory=lambda: ["on_demand", "spot"])
    max_gpus: dict[str, int] = Field(default_factory=dict, description="quota per GPU id")
    allow_mig: bool = True
    spot: SpotAssumptions = Field(default_factory=SpotAssumptions)
    on_demand: OnDemandAssumptions = Field(default_factory=OnDemandAssumptions)


class Workload(StrictModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    services: list[Service] = Field(min_length=1)
    constraints: Constraints = Field(default_factory=Constraints)
    deploy: DeploySettings | None = Field(
        default=None, description="deploy bundle settings (docs/deploy-bundle.md#deploy-settings); None = defaults"
    )

    @model_validator(mode="after")
    def _unique_service_names(self) -> Workload:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"services: duplicate service name(s) {dupes}")
        return self
