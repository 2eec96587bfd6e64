"""How often an on-demand replica is down: the clouds' single-instance SLAs (docs/cost-model.md#on-demand-instances).

An SLA is the uptime a provider commits to (and credits when missed), a floor, not a measured failure rate; real
instances are usually up more often. It is the figure a provider will stand behind, so the planner plans with it:
- AWS, Amazon Compute SLA, Instance-Level SLA: each individual EC2 instance available with an uptime percentage of
  at least 99.5 % (https://aws.amazon.com/compute/sla/; the instance-level commitment beside the 99.99 %
  region-level one for instances spread over two or more zones);
- Google Cloud, Compute Engine SLA: a single instance (other than memory-optimized) >= 99.9 % monthly uptime,
  Premium network tier (https://cloud.google.com/compute/sla).
Other clouds, and clouds the catalog does not name, take the lower of the two (99.5 %). Your own GPUs (fleet mode)
have no SLA: not modelled unless `constraints.on_demand.instance_unavailability` says how often one is down.
"""

from __future__ import annotations

from vlmopt.schemas.workload import OnDemandAssumptions

# Single-instance SLA uptime per cloud, as the SLA pages above state it.
RETRIEVED = "2026-11-30"
SINGLE_INSTANCE_SLA = {"aws": 0.995, "gcp": 0.999}
DEFAULT_SLA = min(SINGLE_INSTANCE_SLA.values())
SLA_SOURCES = {
    "aws": "Amazon Compute SLA, Instance-Level SLA (aws.amazon.com/compute/sla)",
    "gcp": "Compute Engine SLA, single instance (cloud.google.com/compute/sla)",
}


def on_demand_unavailability(cloud: str | None, assumptions: OnDemandAssumptions, fleet: bool = False) -> float:
    """Share of time one on-demand instance is down: the workload's figure if it sets one, else the cloud's
    single-instance SLA floor; 0 (not modelled) for fleet GPUs without a figure."""
    if assumptions.instance_unavailability is not None:
        return assumptions.instance_unavailability
    if fleet:
        return 0.0
    return 1.0 - SINGLE_INSTANCE_SLA.get((cloud or "").lower(), DEFAULT_SLA)


def source(cloud: str | None, assumptions: OnDemandAssumptions, fleet: bool = False) -> str:
    """Where `on_demand_unavailability`'s figure comes from, for the plan's provenance."""
    if assumptions.instance_unavailability is not None:
        return "constraints.on_demand.instance_unavailability (the workload's figure)"
    if fleet:
        return "not modelled (fleet GPUs have no SLA; set constraints.on_demand.instance_unavailability)"
    key = (cloud or "").lower()
    return SLA_SOURCES.get(key, f"no SLA on file for {cloud!r}: the lower of AWS's and Google's single-instance SLAs")
