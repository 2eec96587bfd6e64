"""What a campaign measures: (variant, GPU, slice) jobs, from `--target GPU[:SLICE]` specs checked against the GPU
catalog, or from a plan's options whose capacity is an estimate that decides the plan (docs/benchmark.md#campaigns).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmopt.hw import mig
from vlmopt.hw.catalog import match_gpu
from vlmopt.schemas.campaign import CampaignTarget
from vlmopt.schemas.catalog import GpuCatalog, GpuSpec, PriceCatalog, PriceEntry
from vlmopt.schemas.common import ContractError
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.plan import Plan

WHOLE = "whole"
# Weights above this share of a slice's memory leave too little for the KV cache and activations: vLLM would fail
# at start-up (or serve nothing useful), so such a job is left out before it costs GPU time.
MAX_WEIGHTS_SHARE = 0.9
GIB = 2**30


@dataclass(frozen=True)
class PlannedTarget:
    """A (variant, target) pair the campaign will run, and why it was picked."""

    variant: str
    target: CampaignTarget


def resolve_gpu(catalog: GpuCatalog, text: str) -> GpuSpec:
    """A GPU catalog id ('h100-sxm-80gb') or a name NVML reports ('NVIDIA H100 80GB HBM3')."""
    wanted = text.strip()
    for gpu in catalog.gpus:
        if gpu.id == wanted.lower():
            return gpu
    spec = match_gpu(catalog, name=wanted)
    if spec is None:
        known = ", ".join(g.id for g in catalog.gpus)
        raise ContractError(f"--target {text!r}: unknown GPU; the GPU catalog has {known}")
    return spec


def parse_target(text: str, catalog: GpuCatalog) -> tuple[GpuSpec, str]:
    """'h100-sxm-80gb', 'h100-sxm-80gb:3g.40gb' (or 'whole'); the slice must be a MIG profile of that GPU."""
    gpu_text, _, slice_text = text.partition(":")
    gpu = resolve_gpu(catalog, gpu_text)
    slice_name = slice_text.strip().lower() or WHOLE
    if slice_name != WHOLE:
        try:
            gpu.mig_profile(slice_name)
        except KeyError as exc:
            raise ContractError(f"--target {text!r}: {exc.args[0]}") from None
    return gpu, slice_name


def slice_share(gpu: GpuSpec, slice_name: str) -> float:
    """Share of the GPU (its cost) a job on this slice holds: compute slices of the MIG profile / the GPU's."""
    if slice_name == WHOLE or gpu.mig is None:
        return 1.0
    return gpu.mig_profile(slice_name).compute_slices / gpu.mig.compute_slices


def slice_memory_gib(gpu: GpuSpec, slice_name: str) -> float:
    return gpu.memory_gib if slice_name == WHOLE else gpu.mig_profile(slice_name).memory_gib


def homogeneous_layout(gpu: GpuSpec, slice_name: str) -> list[str] | None:
    """The most copies of one MIG profile that a GPU holds (a node pool for that slice); None for a whole GPU."""
    if slice_name == WHOLE:
        return None
    profile = gpu.mig_profile(slice_name)
    for count in range(profile.max_count, 0, -1):
        layout = mig.working_order(gpu, [slice_name] * count)
        if layout is not None:
            return list(layout.profiles)
    raise ContractError(f"{gpu.id}: no MIG layout holds a {slice_name} instance")  # pragma: no cover - catalog bug


def price_rows(prices: PriceCatalog, gpu: str, market: str, cloud: str | None, region: str | None) -> list[PriceEntry]:
    """Catalog rows for the GPU on the market, in the cloud/region when given; fewest GPUs per instance first (a
    benchmark job needs one GPU), then cheapest per GPU-hour."""
    rows = [
        r for r in prices.prices
        if r.gpu == gpu and r.market == market and (cloud is None or r.cloud == cloud)
        and (region is None or r.region == region)
    ]
    return sorted(rows, key=lambda r: (r.gpus_per_instance, r.usd_per_gpu_hour, r.cloud, r.region))


def place_target(
    gpu: GpuSpec, slice_name: str, market: str, cloud: str | None, region: str | None, prices: PriceCatalog,
    engine: str, why: str, instance_type: str | None = None,
) -> CampaignTarget:
    """Fill the cloud placement: on a cloud (Kubernetes node pools) the instance type comes from the price catalog;
    without a cloud the job runs on an existing cluster's nodes (or wherever SkyPilot finds the GPU)."""
    if engine == "skypilot" and slice_name != WHOLE:
        raise ContractError(
            f"--target {gpu.id}:{slice_name}: SkyPilot rents whole GPUs and cannot request a MIG slice; "
            "measure slices with --engine kubernetes"
        )
    if cloud is None or engine == "skypilot":
        return CampaignTarget(gpu=gpu.id, slice=slice_name, market=market, cloud=cloud, region=region, why=why)
    rows = price_rows(prices, gpu.id, market, cloud, region)
    if instance_type:
        rows = [r for r in rows if r.instance_type == instance_type] or rows
    if not rows:
        where = f"{cloud}" + (f" {region}" if region else "")
        raise ContractError(
            f"--target {gpu.id}: the price catalog has no {market} instance with this GPU on {where} (node pools need "
            "an instance type); pick another --cloud/--region/--market, or leave --cloud out to use the nodes an "
            "existing cluster has"
        )
    row = rows[0]
    return CampaignTarget(gpu=gpu.id, slice=slice_name, market=market, cloud=row.cloud, region=row.region,
                          instance_type=row.instance_type, gpus_per_instance=row.gpus_per_instance, why=why)


def weights_gib(manifest: VariantManifest, variant: str) -> float:
    return manifest.variant(variant).bytes_on_disk / GIB


def fits(gpu: GpuSpec, slice_name: str, manifest: VariantManifest, variant: str) -> str | None:
    """None when the variant's weights leave room on the slice, else why the job is left out."""
    weights = weights_gib(manifest, variant)
    memory = slice_memory_gib(gpu, slice_name)
    if weights > MAX_WEIGHTS_SHARE * memory:
        where = gpu.id + ("" if slice_name == WHOLE else f":{slice_name}")
        return (f"{variant} ({weights:.1f} GiB of weights) does not fit {where} ({memory:g} GiB; at most "
                f"{MAX_WEIGHTS_SHARE:.0%} may be weights): left out")
    return None


def catalog_targets(
    specs: list[str], variants: list[str], manifest: VariantManifest, catalog: GpuCatalog, prices: PriceCatalog,
    market: str, cloud: str | None, region: str | None, engine: str,
) -> tuple[list[PlannedTarget], list[str]]:
    """Every selected variant on every `--target`; (jobs, notes on pairs left out)."""
    parsed: list[tuple[GpuSpec, str]] = []
    for text in specs:
        pair = parse_target(text, catalog)
        if pair not in parsed:
            parsed.append(pair)
    out: list[PlannedTarget] = []
    notes: list[str] = []
    for gpu, slice_name in parsed:
        target = place_target(gpu, slice_name, market, cloud, region, prices, engine, why="--target")
        for variant in variants:
            reason = fits(gpu, slice_name, manifest, variant)
            if reason:
                notes.append(reason)
                continue
            out.append(PlannedTarget(variant, target))
    return out, notes


def _cost_per_rps(usd_per_hour: float | None, capacity_rps: float) -> float | None:
    if usd_per_hour is None or capacity_rps <= 0:
        return None
    return usd_per_hour / capacity_rps


def plan_targets(
    plan: Plan, plan_path: str, within_percent: float, variants: list[str], manifest: VariantManifest,
    catalog: GpuCatalog, prices: PriceCatalog, market: str, cloud: str | None, region: str | None, engine: str,
) -> tuple[list[PlannedTarget], list[str]]:
    """The options whose estimated capacity decides the plan:

    - every chosen replica whose capacity is estimated (the plan stands on that number);
    - every runner-up candidate (fits, meets the SLO, estimated) whose $/h per req/s is within `within_percent` of
      the chosen option of its service: a better measurement could make it the choice.

    Only variants of `manifest` (and `variants`, when narrowed) are kept. (jobs, notes)."""
    gpus = {g.id: g for g in catalog.gpus}
    where: dict[str, tuple[str | None, str | None, str | None]] = {}
    for ng in plan.node_groups:
        where.setdefault(ng.gpu, (ng.cloud.lower() if ng.cloud else None, ng.region, ng.instance_type))
    picked: dict[tuple[str, str, str], str] = {}
    chosen_cost: dict[str, float] = {}
    for ng in plan.node_groups:
        for r in ng.gpu_layout.replicas:
            cand = next((c for c in plan.candidates if (c.service, c.variant, c.gpu, c.slice, c.market)
                         == (r.service, r.variant, ng.gpu, r.slice, ng.market)), None)
            cost = _cost_per_rps(cand.usd_per_hour_per_replica, cand.capacity_rps) if cand else None
            if cost is not None:
                chosen_cost[r.service] = min(cost, chosen_cost.get(r.service, cost))
            if r.capacity_provenance.kind == "estimated":
                picked.setdefault((r.variant, ng.gpu, r.slice),
                                  f"plan: chosen for {r.service}, capacity estimated ({r.capacity_rps:.2f} req/s)")
    for c in plan.candidates:
        if not (c.fits and c.meets_slo) or c.provenance.kind != "estimated" or c.service not in chosen_cost:
            continue
        cost = _cost_per_rps(c.usd_per_hour_per_replica, c.capacity_rps)
        best = chosen_cost[c.service]
        if cost is None or cost > best * (1 + within_percent / 100):
            continue
        picked.setdefault((c.variant, c.gpu, c.slice),
                          f"plan: runner-up for {c.service}, {cost / best - 1:+.0%} $/req/s vs the choice, estimated")
    known = {v.name for v in manifest.variants}
    wanted = set(variants)
    out: list[PlannedTarget] = []
    notes: list[str] = []
    for (variant, gpu_id, slice_name), why in picked.items():
        if variant not in known or variant not in wanted:
            notes.append(f"{plan_path}: {variant} on {gpu_id} {slice_name} is not a variant of the manifest "
                         "(or not selected): left out")
            continue
        gpu = gpus.get(gpu_id)
        if gpu is None:
            notes.append(f"{plan_path}: GPU {gpu_id} is not in the GPU catalog: left out")
            continue
        plan_cloud, plan_region, instance = where.get(gpu_id, (None, None, None))
        use_cloud = cloud if cloud is not None else plan_cloud
        use_region = region if (region is not None or cloud is not None) else plan_region
        try:
            target = place_target(gpu, slice_name, market, use_cloud, use_region, prices, engine, why,
                                  instance_type=instance if use_cloud == plan_cloud else None)
        except ContractError as exc:
            notes.append(f"{variant} on {gpu_id}:{slice_name}: {exc}")
            continue
        reason = fits(gpu, slice_name, manifest, variant)
        if reason:
            notes.append(reason)
            continue
        out.append(PlannedTarget(variant, target))
    if not out:
        detail = "; ".join(notes[:3]) if notes else (
            "every chosen capacity is measured and no estimated runner-up is within "
            f"{within_percent:g}% of the choice's cost")
        raise ContractError(f"--from-plan {plan_path}: no candidate to benchmark ({detail})")
    return out, notes
