"""What GPUs the plan may use and at what price: price-catalog rows (cloud mode) or inventory pools (fleet mode),
turned into optimizer offers with their spot haircut and provenance."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from vlmopt.hw.catalog import match_gpu
from vlmopt.schemas.catalog import GpuCatalog, PriceCatalog, PriceEntry
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.inventory import GpuInventory
from vlmopt.schemas.workload import Constraints

from . import sla, spot
from .errors import PlanInputError
from .milp_model import Offer


@dataclass(frozen=True)
class OfferInfo:
    offer: Offer
    provenance: Provenance
    cloud: str | None = None
    region: str | None = None
    instance_type: str | None = None
    interruption_rate_per_hour: float | None = None
    # On-demand offers: share of time one instance is down (the cloud's single-instance SLA, sla.py); 0 on spot
    # (the spot model has its own) and for fleet GPUs unless the workload sets it.
    instance_unavailability: float = 0.0


def spot_shape(constraints: Constraints, rate: float | None) -> tuple[float, float]:
    """(haircut, zone share) of a spot offer: the expected down share of its capacity, and what is left of it
    when one of the zones it is spread over loses all its spot capacity (spot.py)."""
    replica_down = spot.replica_unavailability(constraints.spot, rate)
    zone_down = spot.zone_unavailability(constraints.spot)
    return 1 - (1 - replica_down) * (1 - zone_down), spot.zone_survival_share(constraints.spot.zones)


def _catalog_provenance(row: PriceEntry, path: str) -> Provenance:
    return Provenance(
        kind="catalog",
        source=f"{path}: {row.cloud} {row.region} {row.instance_type} {row.market} ({row.source})",
        date=row.retrieved,
    )


def cloud_offers(
    prices: PriceCatalog, gpus: GpuCatalog, constraints: Constraints, prices_path: str
) -> list[OfferInfo]:
    """One offer per (GPU, market, GPUs per instance): the cheapest allowed row. Zone diversity of spot capacity is
    modelled by the spot model's zone count, not by separate rows."""
    best: dict[tuple[str, str, int], PriceEntry] = {}
    for row in prices.prices:
        if constraints.clouds is not None and row.cloud not in constraints.clouds:
            continue
        if constraints.gpus is not None and row.gpu not in constraints.gpus:
            continue
        if row.market not in constraints.markets:
            continue
        key = (row.gpu, row.market, row.gpus_per_instance)
        if key not in best or row.usd_per_hour < best[key].usd_per_hour:
            best[key] = row
    out = []
    for (gpu, market, gpus_per_instance), row in sorted(best.items()):
        haircut, share = (0.0, 1.0)
        if market == "spot":
            haircut, share = spot_shape(constraints, row.interruption_rate_per_hour)
        key = f"{row.cloud}:{row.region}:{row.instance_type}:{market}"
        offer = Offer(key, gpu, market, row.usd_per_hour, gpus_per_instance, haircut=haircut, zone_share=share)
        out.append(
            OfferInfo(
                offer,
                _catalog_provenance(row, prices_path),
                row.cloud,
                row.region,
                row.instance_type,
                row.interruption_rate_per_hour,
                sla.on_demand_unavailability(row.cloud, constraints.on_demand) if market == "on_demand" else 0.0,
            )
        )
    return out


def fleet_offers(
    inventory: GpuInventory, gpus: GpuCatalog, prices: PriceCatalog | None, constraints: Constraints, prices_path: str
) -> list[OfferInfo]:
    """One offer per pool of identical inventory GPUs (same catalog GPU, same price). A GPU without its own
    usd_per_hour is priced at the cheapest on-demand catalog row per GPU, labelled as such."""
    pools: dict[tuple[str, float], list[int]] = defaultdict(list)
    provenance: dict[tuple[str, float], Provenance] = {}
    for i, g in enumerate(inventory.gpus):
        where = f"{inventory.source}: gpus[{i}]"
        spec = None
        if g.catalog_id:
            spec = next((s for s in gpus.gpus if s.id == g.catalog_id), None)
            if spec is None:
                raise PlanInputError(f"{where}.catalog_id: unknown GPU {g.catalog_id!r}")
        else:
            spec = match_gpu(gpus, name=g.name, pci_device_id=g.pci_device_id)
            if spec is None:
                raise PlanInputError(f"{where}.name: GPU {g.name!r} is not in the GPU catalog; set catalog_id")
        if constraints.gpus is not None and spec.id not in constraints.gpus:
            continue
        if g.usd_per_hour is not None:
            if g.usd_per_hour < 0:
                raise PlanInputError(f"{where}.usd_per_hour: must be >= 0, got {g.usd_per_hour}")
            price = float(g.usd_per_hour)
            prov = Provenance(kind="user", source=f"{inventory.source}: usd_per_hour of {spec.id}")
        else:
            rows = [r for r in (prices.prices if prices else []) if r.gpu == spec.id and r.market == "on_demand"]
            if not rows:
                raise PlanInputError(
                    f"{where}.usd_per_hour: not set, and the price catalog has no on-demand price for {spec.id}"
                )
            row = min(rows, key=lambda r: r.usd_per_gpu_hour)
            price = row.usd_per_gpu_hour
            prov = _catalog_provenance(row, prices_path)
        pools[(spec.id, price)].append(g.index)
        provenance[(spec.id, price)] = prov
    out = []
    for (gpu, price), indices in sorted(pools.items()):
        key = f"fleet:{gpu}:{price:g}"
        # Owned GPUs cost something even when idle; the plan's cost counts the GPUs it uses, the rest are free to
        # give back or run other work.
        offer = Offer(key, gpu, "on_demand", max(price, 1e-6), 1, stock_gpus=len(indices))
        out.append(OfferInfo(offer, provenance[(gpu, price)],
                             instance_unavailability=sla.on_demand_unavailability(None, constraints.on_demand,
                                                                                  fleet=True)))
    return out
