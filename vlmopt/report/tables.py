"""The report's tables as pandas DataFrames of raw values (what the CSV files hold). Pure functions, no I/O.

Display formatting (dollars, percentages) happens later in `document.py`; here every cell keeps full precision so
a CSV reader can recompute any figure the report shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from vlmopt.schemas import BenchmarkProfile, LoadPoint, Plan, Provenance, VariantManifest

from .formatting import is_number, provenance_kinds, saving_fraction

CANDIDATE_COLUMNS = [
    "service", "variant", "gpu", "slice", "market", "chosen", "fits", "meets_slo", "slo", "pareto_optimal",
    "capacity_rps", "capacity_low_rps", "capacity_high_rps", "capacity_band",
    "usd_per_hour_per_replica", "p95_latency_ms", "usd_per_million_output_tokens", "reason",
    "provenance_kind", "provenance_source", "provenance_date",
]
COST_COLUMNS = ["metric", "label", "plan", "baseline", "saving", "saving_fraction", "source"]
POINT_COLUMNS = [
    "model", "variant", "scheme", "device", "run_id", "label", "max_concurrency", "request_rate", "completed",
    "failed", "request_throughput", "output_throughput", "images_per_s", "ttft_p50_ms", "ttft_p95_ms",
    "tpot_p50_ms", "tpot_p95_ms", "e2el_p50_ms", "e2el_p95_ms", "meets_slo", "incomplete", "provenance",
]
QUALITY_COLUMNS = [
    "variant", "role", "method", "scheme", "mean_kl", "top1_agreement", "prompts", "measured_how", "source",
]
MEMORY_COLUMNS = [
    "node_group", "gpu", "market", "slice", "mig_start", "service", "variant", "weights_gib", "kv_cache_gib",
    "reserve_gib", "other_gib", "total_gib", "usable_gib", "used_fraction",
]
WATERFALL_COLUMNS = ["step", "kind", "delta", "start", "end", "explanation"]

# (metric key on CostSummary, label shown to people)
COST_METRICS = [
    ("usd_per_hour", "$ per hour"),
    ("usd_per_month", "$ per month"),
    ("usd_per_million_output_tokens", "$ per 1M output tokens"),
    ("usd_per_thousand_images", "$ per 1k images"),
    ("expected_usd_per_hour", "expected $ per hour (spot replacements)"),
    ("worst_case_usd_per_hour", "worst-case $ per hour"),
]
SPOT_ONLY_METRICS = ("expected_usd_per_hour", "worst_case_usd_per_hour")
# Lever order of the waterfall: the order the levers are usually applied when moving off the baseline.
LEVER_ORDER = {"quantization": 0, "mig_packing": 1, "spot": 2, "other": 3}
LEVER_LABELS = {"quantization": "quantization", "mig_packing": "MIG packing", "spot": "spot", "other": "other"}
# A residual smaller than this (in $/h) is rounding in the planner, not an unexplained saving.
RESIDUAL_TOLERANCE_USD = 1e-6


def chosen_keys(plan: Plan) -> set[tuple[str, str, str, str, str]]:
    """(service, variant, gpu, slice, market) of every replica the plan actually deploys."""
    keys = set()
    for group in plan.node_groups:
        if group.instances <= 0:
            continue
        for replica in group.gpu_layout.replicas:
            keys.add((replica.service, replica.variant, group.gpu, replica.slice, group.market))
    return keys


def candidates_frame(plan: Plan) -> pd.DataFrame:
    chosen = chosen_keys(plan)
    rows = []
    for c in plan.candidates:
        rows.append({
            "service": c.service, "variant": c.variant, "gpu": c.gpu, "slice": c.slice, "market": c.market,
            "chosen": (c.service, c.variant, c.gpu, c.slice, c.market) in chosen,
            "fits": c.fits, "meets_slo": c.meets_slo,
            "slo": "pass" if c.fits and c.meets_slo else "fail",
            "capacity_rps": c.capacity_rps, "capacity_low_rps": c.capacity_low_rps,
            "capacity_high_rps": c.capacity_high_rps, "capacity_band": c.capacity_band,
            "usd_per_hour_per_replica": c.usd_per_hour_per_replica,
            "p95_latency_ms": c.p95_latency_ms, "usd_per_million_output_tokens": c.usd_per_million_output_tokens,
            "reason": c.reason, "provenance_kind": c.provenance.kind, "provenance_source": c.provenance.source,
            "provenance_date": c.provenance.date,
        })
    frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    frame["pareto_optimal"] = pareto_optimal(frame)
    return frame


def pareto_optimal(candidates: pd.DataFrame) -> pd.Series:
    """True for SLO-passing candidates no other passing candidate beats on both $ per 1M tokens and p95 latency.

    A candidate is dominated when another is no worse on both axes and strictly better on one. Candidates
    without both figures cannot be placed on the chart and are never marked.
    """
    eligible = (
        (candidates["slo"] == "pass")
        & candidates["usd_per_million_output_tokens"].map(is_number)
        & candidates["p95_latency_ms"].map(is_number)
    )
    cost = candidates["usd_per_million_output_tokens"]
    latency = candidates["p95_latency_ms"]
    flags = []
    for i in candidates.index:
        if not eligible[i]:
            flags.append(False)
            continue
        dominated = False
        for j in candidates.index[eligible]:
            no_worse = cost[j] <= cost[i] and latency[j] <= latency[i]
            better = cost[j] < cost[i] or latency[j] < latency[i]
            if j != i and no_worse and better:
                dominated = True
                break
        flags.append(not dominated)
    return pd.Series(flags, index=candidates.index, dtype=bool)


def price_provenances(plan: Plan) -> list[Provenance]:
    return [g.price_provenance for g in plan.node_groups]


def capacity_provenances(plan: Plan) -> list[Provenance]:
    return [r.capacity_provenance for g in plan.node_groups for r in g.gpu_layout.replicas]


def costs_frame(plan: Plan) -> pd.DataFrame:
    """Plan vs baseline for each cost metric; rows the plan does not compute are kept with empty values."""
    prices = f"{provenance_kinds(price_provenances(plan))} prices"
    per_unit_source = f"{prices} ÷ {provenance_kinds(capacity_provenances(plan))} capacity"
    rows = []
    for key, label in COST_METRICS:
        plan_value = getattr(plan.cost, key)
        base_value = getattr(plan.baseline.cost, key) if plan.baseline else None
        if key in SPOT_ONLY_METRICS and plan_value is None and base_value is None:
            continue  # these exist only for spot mixes; their absence is not a gap in the plan
        saving = base_value - plan_value if is_number(plan_value) and is_number(base_value) else None
        rows.append({
            "metric": key, "label": label, "plan": plan_value, "baseline": base_value, "saving": saving,
            "saving_fraction": saving_fraction(plan_value, base_value),
            "source": prices if key.endswith(("hour", "month")) else per_unit_source,
        })
    return pd.DataFrame(rows, columns=COST_COLUMNS)


ROBUST_COLUMNS = ["figure", "nominal", "robust", "extra"]


def robust_frame(plan: Plan) -> pd.DataFrame | None:
    """The robust plan (every capacity at the low end of its band) beside the nominal one; None when the plan was
    not made robust."""
    r = plan.robust
    if r is None:
        return None
    rows = [{"figure": "$ per hour", "nominal": r.nominal_usd_per_hour, "robust": r.usd_per_hour,
             "extra": r.extra_usd_per_hour},
            {"figure": "GPUs", "nominal": r.nominal_gpus, "robust": r.robust_gpus,
             "extra": r.robust_gpus - r.nominal_gpus}]
    for s in plan.services:
        nominal = r.nominal_replicas.get(s.service, 0)
        rows.append({"figure": f"{s.service} replicas ({r.nominal_variants.get(s.service, '?')} -> {s.variant})",
                     "nominal": nominal, "robust": s.replicas, "extra": s.replicas - nominal})
    return pd.DataFrame(rows, columns=ROBUST_COLUMNS)


def node_groups_frame(plan: Plan) -> pd.DataFrame:
    rows = []
    for g in plan.node_groups:
        layout = g.gpu_layout
        rows.append({
            "node_group": g.name, "gpu": g.gpu, "cloud": g.cloud, "region": g.region,
            "instance_type": g.instance_type, "market": g.market, "instances": g.instances,
            "gpus_per_instance": g.gpus_per_instance,
            "mig_layout": "+".join(layout.mig_layout) if layout.mig_layout else "whole GPU",
            "replicas_per_gpu": len(layout.replicas),
            "variants": ", ".join(sorted({r.variant for r in layout.replicas})),
            "usd_per_hour": g.usd_per_hour, "price_source": g.price_provenance.label(),
        })
    return pd.DataFrame(rows, columns=[
        "node_group", "gpu", "cloud", "region", "instance_type", "market", "instances", "gpus_per_instance",
        "mig_layout", "replicas_per_gpu", "variants", "usd_per_hour", "price_source",
    ])


def services_frame(plan: Plan) -> pd.DataFrame:
    rows = [{
        "service": s.service, "model": s.model, "variant": s.variant, "replicas": s.replicas,
        "required_rps": s.required_rps, "provided_rps": s.provided_rps, "availability": s.availability,
        "slo": ", ".join(f"{k} ≤ {v:g}" for k, v in s.slo.items()), "why": s.why,
    } for s in plan.services]
    return pd.DataFrame(rows, columns=[
        "service", "model", "variant", "replicas", "required_rps", "provided_rps", "availability", "slo", "why",
    ])


def levers_frame(plan: Plan) -> pd.DataFrame:
    rows = [{"lever": lv.name, "label": LEVER_LABELS[lv.name], "usd_per_hour_saved": lv.usd_per_hour_saved,
             "explanation": lv.explanation} for lv in sorted(plan.levers, key=lambda lv: LEVER_ORDER[lv.name])]
    return pd.DataFrame(rows, columns=["lever", "label", "usd_per_hour_saved", "explanation"])


def waterfall_frame(plan: Plan) -> pd.DataFrame | None:
    """Baseline $/h, minus each lever's saving, down to the plan's $/h. None when the plan has no baseline.

    Levers come from the planner; if they do not add up to baseline minus plan (interactions between levers,
    or a planner that attributes only part of the saving), the gap is shown as its own 'unattributed' step
    rather than silently stretched over the levers.
    """
    if plan.baseline is None:
        return None
    start_value = plan.baseline.cost.usd_per_hour
    rows = [{"step": "baseline", "kind": "total", "delta": start_value, "start": 0.0, "end": start_value,
             "explanation": plan.baseline.description}]
    level = start_value
    for lever in sorted(plan.levers, key=lambda lv: LEVER_ORDER[lv.name]):
        new_level = level - lever.usd_per_hour_saved
        rows.append({"step": LEVER_LABELS[lever.name], "kind": "lever", "delta": -lever.usd_per_hour_saved,
                     "start": level, "end": new_level, "explanation": lever.explanation})
        level = new_level
    residual = plan.cost.usd_per_hour - level
    if abs(residual) > RESIDUAL_TOLERANCE_USD:
        rows.append({"step": "unattributed", "kind": "residual", "delta": residual, "start": level,
                     "end": plan.cost.usd_per_hour,
                     "explanation": "difference between baseline minus the levers and the plan's total"})
    rows.append({"step": "this plan", "kind": "total", "delta": plan.cost.usd_per_hour, "start": 0.0,
                 "end": plan.cost.usd_per_hour, "explanation": "plan.json cost.usd_per_hour"})
    return pd.DataFrame(rows, columns=WATERFALL_COLUMNS)


def _point_stat(point: LoadPoint, metric: str, stat: str) -> float | None:
    """Latency percentile from a load point; p50 falls back to vLLM's `median_*` key (same statistic)."""
    data = point.model_dump()
    keys = [f"{stat}_{metric}_ms"] + ([f"median_{metric}_ms"] if stat == "p50" else [])
    for key in keys:
        value = data.get(key)
        if is_number(value):
            return float(value)
    return None


def profile_provenance(profile: BenchmarkProfile) -> Provenance:
    """The profile's own provenance when the benchmark recorded one, else one built from its run fields."""
    detail = None if profile.complete else f"incomplete: {profile.incomplete_reason or 'run did not finish'}"
    if profile.provenance is not None:
        prov = profile.provenance
        return prov if detail is None else prov.model_copy(update={"detail": detail})
    date = (profile.finished or profile.started or "")[:10] or None
    source = f"{profile.variant}@{profile.device.slug()}"
    if profile.run_id:
        source += f" run {profile.run_id}"
    return Provenance(kind="measured", source=source, date=date, detail=detail)


def points_frame(profiles: Sequence[BenchmarkProfile]) -> pd.DataFrame:
    rows = []
    for profile in profiles:
        prov = profile_provenance(profile).label()
        for p in profile.points:
            rows.append({
                "model": profile.model, "variant": profile.variant, "scheme": profile.variant_scheme,
                "device": profile.device.slug(), "run_id": profile.run_id, "label": p.label,
                "max_concurrency": p.max_concurrency, "request_rate": p.request_rate, "completed": p.completed,
                "failed": p.failed, "request_throughput": p.request_throughput,
                "output_throughput": p.output_throughput, "images_per_s": p.images_per_s,
                "ttft_p50_ms": _point_stat(p, "ttft", "p50"), "ttft_p95_ms": _point_stat(p, "ttft", "p95"),
                "tpot_p50_ms": _point_stat(p, "tpot", "p50"), "tpot_p95_ms": _point_stat(p, "tpot", "p95"),
                "e2el_p50_ms": _point_stat(p, "e2el", "p50"), "e2el_p95_ms": _point_stat(p, "e2el", "p95"),
                "meets_slo": p.meets_slo, "incomplete": p.incomplete, "provenance": prov,
            })
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def _fidelity_value(fidelity: dict[str, float], *needles: str) -> float | None:
    """plan.services[].fidelity is a free dict; accept 'mean_kl'/'kl' and 'top1_agreement'/'top1' spellings."""
    for key, value in fidelity.items():
        if any(n in key.lower() for n in needles) and is_number(value):
            return float(value)
    return None


def quality_frame(manifests: Sequence[VariantManifest], plan: Plan) -> pd.DataFrame:
    """One row per variant. Manifests are the measured source; plan fidelity fills variants no manifest covers."""
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for manifest in manifests:
        manifest_source = f"manifest of {manifest.base_model}" + (
            f" ({manifest.created[:10]})" if manifest.created else "")
        for v in manifest.variants:
            fid = v.fidelity
            rows.append({
                "variant": v.name, "role": "baseline" if fid is None and v.method == "none" else "quantized",
                "method": v.method, "scheme": v.scheme, "mean_kl": fid.mean_kl if fid else None,
                "top1_agreement": fid.top1_agreement if fid else None, "prompts": fid.prompts if fid else None,
                "measured_how": fid.measured_how if fid else ("reference" if v.method == "none" else "not measured"),
                "source": v.provenance.label() if v.provenance else manifest_source,
            })
            seen.add(v.name)
        for r in manifest.rejected:
            fid = r.fidelity
            rows.append({
                "variant": r.name, "role": f"rejected: {r.reason}", "method": r.method, "scheme": None,
                "mean_kl": fid.mean_kl if fid else None, "top1_agreement": fid.top1_agreement if fid else None,
                "prompts": fid.prompts if fid else None, "measured_how": fid.measured_how if fid else "not measured",
                "source": manifest_source,
            })
            seen.add(r.name)
    for service in plan.services:
        if service.variant in seen or not service.fidelity:
            continue
        rows.append({
            "variant": service.variant, "role": "chosen", "method": None, "scheme": None,
            "mean_kl": _fidelity_value(service.fidelity, "kl"),
            "top1_agreement": _fidelity_value(service.fidelity, "top1", "top_1"),
            "prompts": None, "measured_how": "as recorded in plan.json",
            "source": f"plan.json services[{service.service}].fidelity",
        })
        seen.add(service.variant)
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


MEMORY_PARTS = ("weights", "kv_cache", "reserve")


def memory_frame(plan: Plan) -> pd.DataFrame:
    """Memory breakdown of every replica on a slice, from the planner's memory-fit model (replica.memory_gib)."""
    rows = []
    for g in plan.node_groups:
        for r in g.gpu_layout.replicas:
            if not r.memory_gib:
                continue
            mem = r.memory_gib
            parts = {k: float(v) for k, v in mem.items() if k not in ("total", "usable")}
            other = sum(v for k, v in parts.items() if k not in MEMORY_PARTS)
            total = float(mem["total"]) if "total" in mem else sum(parts.values())
            usable = float(mem["usable"]) if "usable" in mem else None
            rows.append({
                "node_group": g.name, "gpu": g.gpu, "market": g.market, "slice": r.slice,
                "mig_start": r.mig_start, "service": r.service, "variant": r.variant,
                "weights_gib": parts.get("weights"), "kv_cache_gib": parts.get("kv_cache"),
                "reserve_gib": parts.get("reserve"), "other_gib": other or None, "total_gib": total,
                "usable_gib": usable, "used_fraction": total / usable if usable else None,
            })
    return pd.DataFrame(rows, columns=MEMORY_COLUMNS)


def inputs_frame(
    plan: Plan, profiles: Sequence[BenchmarkProfile], manifests: Sequence[VariantManifest]
) -> pd.DataFrame:
    """Every input behind the report, one row each: what the planner recorded plus what the report itself read."""
    rows: list[dict[str, object]] = []

    def add(role: str, prov: Provenance) -> None:
        row = {"role": role, "kind": prov.kind, "source": prov.source, "date": prov.date, "detail": prov.detail}
        if row not in rows:
            rows.append(row)

    for prov in plan.inputs:
        add("plan input", prov)
    for g in plan.node_groups:
        add(f"price of node group {g.name}", g.price_provenance)
    for g in plan.node_groups:
        for r in g.gpu_layout.replicas:
            add(f"capacity of {r.variant} on {g.gpu} {r.slice}", r.capacity_provenance)
    for profile in profiles:
        add("benchmark profile (latency curves)", profile_provenance(profile))
    for manifest in manifests:
        add("variant manifest (quality)", Provenance(kind="measured", source=f"manifest of {manifest.base_model}",
                                                     date=manifest.created[:10] or None))
    return pd.DataFrame(rows, columns=["role", "kind", "source", "date", "detail"])
