"""Assemble the report document from a plan, its benchmark profiles and variant manifests.

One function per section. Each section shows a figure only with its provenance, and says plainly what is missing
when the plan or the inputs do not carry the data for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import pandas as pd

from vlmopt.schemas import BenchmarkProfile, Plan, VariantManifest

from . import plots, tables
from .document import Document, Figure, Headline, Missing, Paragraph, Plot, Section, Table, display_frame
from .formatting import (
    MISSING,
    is_number,
    number,
    percent,
    provenance_label,
    provenance_summary,
    usd,
    yes_no,
)
from .recommendation import recommendation_text

# A plan's own totals and the sum of its node groups' prices may differ by float rounding only.
TOTAL_TOLERANCE_USD = 1e-6


@dataclass(frozen=True)
class ReportData:
    """Everything the sections read: raw tables computed once, shared by the CSVs, the plots and the text."""

    plan: Plan
    profiles: Sequence[BenchmarkProfile]
    manifests: Sequence[VariantManifest]
    candidates: pd.DataFrame
    costs: pd.DataFrame
    points: pd.DataFrame
    quality: pd.DataFrame
    memory: pd.DataFrame
    node_groups: pd.DataFrame
    services: pd.DataFrame
    levers: pd.DataFrame
    waterfall: pd.DataFrame | None
    inputs: pd.DataFrame
    robust: pd.DataFrame | None = None

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """Every CSV the report writes, by file name; the four named in the issue always exist (maybe empty)."""
        out = {
            "candidates.csv": self.candidates, "costs.csv": self.costs, "points.csv": self.points,
            "quality.csv": self.quality, "memory.csv": self.memory, "node_groups.csv": self.node_groups,
            "levers.csv": self.levers, "inputs.csv": self.inputs,
        }
        if self.waterfall is not None:
            out["waterfall.csv"] = self.waterfall
        if self.robust is not None:
            out["robust.csv"] = self.robust
        return out


def collect(plan: Plan, profiles: Sequence[BenchmarkProfile], manifests: Sequence[VariantManifest]) -> ReportData:
    return ReportData(
        plan=plan, profiles=profiles, manifests=manifests,
        candidates=tables.candidates_frame(plan), costs=tables.costs_frame(plan),
        points=tables.points_frame(profiles), quality=tables.quality_frame(manifests, plan),
        memory=tables.memory_frame(plan), node_groups=tables.node_groups_frame(plan),
        services=tables.services_frame(plan), levers=tables.levers_frame(plan),
        waterfall=tables.waterfall_frame(plan), inputs=tables.inputs_frame(plan, profiles, manifests),
        robust=tables.robust_frame(plan),
    )


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _signed_percent(fraction: object) -> str:
    if not is_number(fraction):
        return MISSING
    assert isinstance(fraction, (int, float))
    return f"−{percent(fraction)}" if fraction >= 0 else f"+{percent(-fraction)}"


def recommendation_section(data: ReportData) -> Section:
    plan = data.plan
    figures = []
    for row in data.costs.itertuples():
        comparison = ""
        if is_number(row.baseline):
            comparison = f"baseline {usd(row.baseline)}, {_signed_percent(row.saving_fraction)}"
        figures.append(Figure(row.metric, row.label, usd(row.plan, missing="not computed by the plan"),
                              float(row.plan) if is_number(row.plan) else None, comparison))
    source = provenance_summary(tables.price_provenances(plan))
    return Section("recommendation", "Recommendation", [
        Paragraph(recommendation_text(plan)),
        Headline(figures, f"plan.json cost (plan {plan.name}, created {plan.created}); prices {source}"),
    ])


def cost_section(data: ReportData) -> Section:
    plan = data.plan
    blocks: list = []
    if plan.baseline is None:
        blocks.append(Missing("The plan has no baseline, so there is nothing to compare against and no saving "
                              "to attribute."))
    frame = display_frame(data.costs, {
        "label": ("metric", None), "plan": ("this plan", usd), "baseline": ("baseline", usd),
        "saving": ("saving", usd), "saving_fraction": ("change", _signed_percent), "source": ("source", None),
    })
    baseline = f" The baseline is {plan.baseline.description}." if plan.baseline else ""
    blocks.insert(0, Paragraph("What the plan costs, next to the baseline it was compared with. Per-token and "
                               "per-image costs divide $/hour by the throughput the plan provides." + baseline))
    sources = (f"plan.json cost and baseline.cost; prices {provenance_summary(tables.price_provenances(plan))}; "
               f"capacity {provenance_summary(tables.capacity_provenances(plan))}")
    blocks.append(Table("Cost vs baseline", frame, sources, "costs.csv"))
    if data.robust is not None and plan.robust is not None:
        blocks.append(Paragraph(
            "This is a robust plan: it is sized so that the SLO still holds if every replica's capacity is at the "
            "low end of its error band (an estimate's measured model error, a measurement's run-to-run spread). "
            f"The nominal plan, sized at the central figures, costs {usd(plan.robust.nominal_usd_per_hour)} per "
            f"hour; robustness adds {usd(plan.robust.extra_usd_per_hour)} per hour."))
        blocks.append(Table("Robust plan vs nominal plan", _robust_display(data.robust),
                            "plan.json robust (both plans solved by the planner)", "robust.csv"))
    for label, value in (("expected $/hour with spot replacements", plan.cost.expected_usd_per_hour),
                         ("worst-case $/hour", plan.cost.worst_case_usd_per_hour)):
        if value is None and any(g.market == "spot" for g in plan.node_groups):
            blocks.append(Missing(f"The plan uses spot capacity but records no {label}."))
    return Section("costs", "Cost vs baseline", blocks)


def _robust_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Dollars on the $/hour row, counts on the others."""
    rows = []
    for row in frame.to_dict("records"):
        fmt = usd if row["figure"].startswith("$") else (lambda v: f"{int(v):+d}" if v else "0")
        plain = usd if row["figure"].startswith("$") else (lambda v: str(int(v)))
        rows.append({"figure": row["figure"], "nominal plan": plain(row["nominal"]),
                     "robust plan (this plan)": plain(row["robust"]), "extra": fmt(row["extra"])})
    return pd.DataFrame(rows)


def waterfall_section(data: ReportData) -> Section:
    plan = data.plan
    blocks: list = []
    plot = plots.waterfall_plot(data.waterfall)
    if plot is None:
        blocks.append(Missing("The plan has no baseline, so the waterfall has no starting point."))
    else:
        prices = provenance_summary(tables.price_provenances(plan))
        blocks.append(Plot(plot, f"plan.json baseline.cost and levers[] (planner attribution; prices {prices})"))
        assert data.waterfall is not None
        residual = data.waterfall[data.waterfall["kind"] == "residual"]
        if not residual.empty:
            blocks.append(Missing(f"The levers do not add up to the difference between baseline and plan; the "
                                  f"remaining {usd(float(residual['delta'].iloc[0]))} per hour is shown as "
                                  "'unattributed'."))
    if data.levers.empty:
        blocks.append(Missing("The plan attributes its saving to no lever (plan.levers is empty)."))
    else:
        blocks.append(Table("Levers", display_frame(data.levers, {
            "label": ("lever", None), "usd_per_hour_saved": ("$/hour saved", usd),
            "explanation": ("why", None),
        }), "plan.json levers[]", "levers.csv"))
    return Section("waterfall", "Cost waterfall by lever", blocks)


def deployment_section(data: ReportData) -> Section:
    plan = data.plan
    blocks: list = []
    if data.services.empty:
        blocks.append(Missing("The plan lists no services."))
    else:
        blocks.append(Table("Services", display_frame(data.services, {
            "service": ("service", None), "model": ("model", None), "variant": ("variant", None),
            "replicas": ("replicas", None), "required_rps": ("required req/s", number),
            "provided_rps": ("provided req/s", number), "availability": ("availability", _availability),
            "slo": ("SLO", None), "why": ("why this variant", None),
        }), "plan.json services[]"))
    if data.node_groups.empty:
        blocks.append(Missing("The plan has no node groups: nothing is deployed."))
    else:
        blocks.append(Table("Node groups", display_frame(data.node_groups, {
            "node_group": ("group", None), "gpu": ("GPU", None), "instance_type": ("instance", _text),
            "market": ("market", None), "instances": ("instances", None), "mig_layout": ("layout per GPU", None),
            "replicas_per_gpu": ("replicas/GPU", None), "variants": ("variants", None),
            "usd_per_hour": ("$/hour", usd), "price_source": ("price source", None),
        }), "plan.json node_groups[] (prices from the catalog rows named)", "node_groups.csv"))
        group_sum = sum(g.usd_per_hour for g in plan.node_groups)
        if abs(group_sum - plan.cost.usd_per_hour) > TOTAL_TOLERANCE_USD * max(1.0, plan.cost.usd_per_hour):
            blocks.append(Missing(f"The node groups add up to {usd(group_sum)} per hour but the plan's total is "
                                  f"{usd(plan.cost.usd_per_hour)}; the report shows the plan's total."))
    return Section("deployment", "What gets deployed", blocks)


def _availability(value: object) -> str:
    return f"{float(value) * 100:.6g}%" if is_number(value) else MISSING  # type: ignore[arg-type]


def candidates_section(data: ReportData) -> Section:
    blocks: list = []
    cands = data.candidates
    if cands.empty:
        blocks.append(Missing("The plan lists no candidates (plan.candidates is empty), so there is no "
                              "candidate table and no Pareto chart."))
        return Section("candidates", "Every candidate", blocks)
    passing = int((cands["slo"] == "pass").sum())
    blocks.append(Paragraph(
        f"The planner considered {len(cands)} options (variant × GPU × MIG slice × market); {passing} fit in "
        "memory and meet the SLO. 'chosen' marks those the plan deploys; 'Pareto' marks passing options no other "
        "passing option beats on both cost and p95 latency."))
    prov = provenance_summary(c.provenance for c in data.plan.candidates)
    plot = plots.pareto_plot(cands)
    if plot is None:
        blocks.append(Missing("No Pareto chart: no candidate has both a p95 latency and a $ per 1M output tokens "
                              "figure."))
    else:
        blocks.append(Plot(plot, f"plan.json candidates[]: {prov}"))
    frame = display_frame(cands, {
        "service": ("service", None), "variant": ("variant", None), "gpu": ("GPU", None),
        "slice": ("slice", None), "market": ("market", None), "slo": ("SLO", lambda v: yes_no(v == "pass")),
        "chosen": ("chosen", lambda v: "yes" if v else ""), "pareto_optimal": ("Pareto", lambda v: "yes" if v else ""),
        "capacity_rps": ("capacity req/s", number), "capacity_low_rps": ("band low", number),
        "capacity_high_rps": ("band high", number), "p95_latency_ms": ("p95 ms", number),
        "usd_per_hour_per_replica": ("$/hour/replica", usd), "usd_per_million_output_tokens": ("$/1M tok", usd),
        "reason": ("reason", None), "provenance_kind": ("figures", None),
    })
    blocks.append(Table("Candidates", frame, f"plan.json candidates[]: {prov}", "candidates.csv"))
    return Section("candidates", "Every candidate", blocks)


def latency_section(data: ReportData) -> Section:
    blocks: list = []
    capacity = provenance_summary(tables.capacity_provenances(data.plan))
    if not data.profiles:
        blocks.append(Missing("No benchmark profiles were given, so there are no measured latency curves. Pass "
                              f"`--profiles DIR` (files written by `vlmopt benchmark`). This plan's capacities are "
                              f"{capacity}."))
        return Section("latency", "Latency vs throughput", blocks)
    prov = provenance_summary(tables.profile_provenance(p) for p in data.profiles)
    plot = plots.latency_plot(data.points)
    if plot is None:
        blocks.append(Missing("The profiles hold no load point with a throughput and a TTFT or E2E latency, "
                              "so there are no curves to draw."))
    else:
        blocks.append(Plot(plot, prov))
    rows = []
    for p in data.profiles:
        cap = p.capacity
        rows.append({
            "variant": p.variant, "device": p.device.slug(), "points": len(p.points),
            "peak": max((pt.request_throughput for pt in p.points), default=None),
            "slo_rate": cap.max_rate_meeting_slo if cap else None,
            "slo": ", ".join(f"{k} ≤ {number(v)}" for k, v in cap.slo.items()) if cap and cap.slo else "",
            "saturation": cap.saturation_rate if cap else None,
            "source": provenance_label(tables.profile_provenance(p)),
        })
    frame = display_frame(pd.DataFrame(rows), {
        "variant": ("variant", None), "device": ("device", None), "points": ("load points", None),
        "peak": ("peak req/s", number), "slo_rate": ("req/s at SLO", number), "slo": ("SLO", None),
        "saturation": ("saturation req/s", number), "source": ("source", None),
    })
    blocks.append(Table("Benchmark profiles (every load point is in points.csv)", frame, prov, "points.csv"))
    return Section("latency", "Latency vs throughput", blocks)


def memory_section(data: ReportData) -> Section:
    blocks: list = []
    source = ("estimated: planner memory-fit model (plan.json node_groups[].gpu_layout.replicas[].memory_gib, "
              f"plan {data.plan.name})")
    plot = plots.memory_plot(data.memory)
    if plot is None:
        blocks.append(Missing("The plan records no memory breakdown for its replicas (replica.memory_gib), so "
                              "memory per slice cannot be shown."))
        return Section("memory", "Memory per MIG slice", blocks)
    if not any(g.gpu_layout.mig_layout for g in data.plan.node_groups):
        blocks.append(Paragraph("No replica runs on a MIG slice in this plan; the bars show whole GPUs."))
    blocks.append(Plot(plot, source))
    blocks.append(Table("Memory per replica (GiB)", display_frame(data.memory, {
        "node_group": ("group", None), "slice": ("slice", None), "mig_start": ("start", _int_text),
        "variant": ("variant", None), "weights_gib": ("weights", number), "kv_cache_gib": ("KV cache", number),
        "reserve_gib": ("reserve", number), "total_gib": ("total", number), "usable_gib": ("usable", number),
        "used_fraction": ("used", percent),
    }), source, "memory.csv"))
    return Section("memory", "Memory per MIG slice", blocks)


def _int_text(value: object) -> str:
    return str(int(value)) if is_number(value) else ""  # type: ignore[call-overload]


def quality_section(data: ReportData) -> Section:
    blocks: list = []
    if data.quality.empty:
        blocks.append(Missing("No variant manifest was given and the plan records no fidelity figures, so quality "
                              "cannot be shown. Pass `--manifest variants/<model>/manifest.json`."))
        return Section("quality", "Quality per variant", blocks)
    sources = "; ".join(dict.fromkeys(data.quality["source"]))
    blocks.append(Paragraph("Fidelity against the bf16 model on image+text prompts: mean KL divergence of the "
                            "next-token distributions (lower is closer) and top-1 agreement (higher is closer)."))
    plot = plots.quality_plot(data.quality)
    if plot is None:
        blocks.append(Missing("No variant has a KL or top-1 figure yet, so there is no quality chart."))
    else:
        blocks.append(Plot(plot, f"measured: {sources}"))
    blocks.append(Table("Quality", display_frame(data.quality, {
        "variant": ("variant", None), "role": ("role", None), "method": ("method", _text),
        "scheme": ("scheme", _text), "mean_kl": ("mean KL", partial(number, digits=3)),
        "top1_agreement": ("top-1", percent), "prompts": ("prompts", _int_text),
        "measured_how": ("measured how", None), "source": ("source", None),
    }), sources, "quality.csv"))
    return Section("quality", "Quality per variant", blocks)


def provenance_section(data: ReportData) -> Section:
    plan = data.plan
    blocks: list = [Paragraph("Every input behind this report. measured: a benchmark run or quantization on real "
                              "hardware; estimated: a model (named); catalog: a data file row (source and "
                              "retrieval date); user: given by you.")]
    if data.inputs.empty:
        blocks.append(Missing("The plan records no inputs (plan.inputs is empty)."))
    else:
        blocks.append(Table("Inputs", display_frame(data.inputs, {
            "role": ("role", None), "kind": ("kind", None), "source": ("source", None), "date": ("date", _text),
            "detail": ("detail", _text),
        }), f"plan.json inputs[] and the files given to `vlmopt report` (plan {plan.name})", "inputs.csv"))
    if plan.solver:
        solver = ", ".join(f"{k}={v}" for k, v in plan.solver.items())
        blocks.append(Paragraph(f"Solver: {solver}."))
    for note in plan.notes:
        blocks.append(Paragraph(f"Planner note: {note}"))
    return Section("provenance", "Provenance of every input", blocks)


def compose(data: ReportData, generated: str) -> Document:
    plan = data.plan
    meta = [("plan", plan.name), ("mode", plan.mode), ("plan created", plan.created),
            ("workload", plan.workload), ("availability target", _availability(plan.availability_target)),
            ("report generated", generated)]
    return Document(
        title=f"Cost report: {plan.name}",
        meta=meta,
        sections=[
            recommendation_section(data), cost_section(data), waterfall_section(data), deployment_section(data),
            candidates_section(data), latency_section(data), memory_section(data), quality_section(data),
            provenance_section(data),
        ],
    )
