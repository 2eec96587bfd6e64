"""The one-paragraph recommendation at the top of the report, written from the plan alone. Pure functions."""

from __future__ import annotations

from vlmopt.plan.explain import optimality
from vlmopt.schemas import NodeGroup, Plan

from .formatting import number, percent, provenance_summary, saving_fraction, usd
from .tables import LEVER_LABELS, capacity_provenances


def describe_node_group(group: NodeGroup) -> str:
    where = " ".join(p for p in (group.cloud, group.region, group.instance_type) if p)
    layout = group.gpu_layout.mig_layout
    slices = f"MIG {' + '.join(layout)}" if layout else "whole GPUs"
    gpus = group.instances * group.gpus_per_instance
    market = "spot" if group.market == "spot" else "on-demand"
    return f"{group.instances} × {where or group.gpu} {market} ({gpus} × {group.gpu}, {slices})"


def recommendation_text(plan: Plan) -> str:
    sentences: list[str] = []
    services = "; ".join(
        f"service '{s.service}' with variant {s.variant} ({s.replicas} replica{'s' if s.replicas != 1 else ''}, "
        f"{number(s.provided_rps)} req/s provided for {number(s.required_rps)} req/s required)"
        for s in plan.services
    )
    groups = [describe_node_group(g) for g in plan.node_groups if g.instances > 0]
    if groups:
        sentences.append(f"Serve {services or 'the workload'} on {', plus '.join(groups)}.")
    else:
        sentences.append(f"The plan deploys no instances for {services or 'the workload'}.")

    cost = f"This costs {usd(plan.cost.usd_per_hour)} per hour ({usd(plan.cost.usd_per_month)} per month)"
    if plan.baseline is not None:
        base = plan.baseline.cost.usd_per_hour
        saving = saving_fraction(plan.cost.usd_per_hour, base)
        direction = "less" if (saving or 0) >= 0 else "more"
        cost += (f", {percent(abs(saving or 0))} {direction} than the baseline ({plan.baseline.description}) "
                 f"at {usd(base)} per hour")
    sentences.append(cost + ".")
    if plan.robust is not None:
        sentences.append(f"The plan is robust: it meets the SLO with every capacity at the low end of its error "
                         f"band, which costs {usd(plan.robust.extra_usd_per_hour)} per hour more than the nominal "
                         f"plan ({usd(plan.robust.nominal_usd_per_hour)} per hour).")
    proven = optimality(plan.solver)
    if proven is not None:
        sentences.append(f"The optimizer's plan is {proven}.")

    helpful = [lv for lv in plan.levers if lv.usd_per_hour_saved > 0]
    if helpful:
        best = max(helpful, key=lambda lv: lv.usd_per_hour_saved)
        sentences.append(f"The largest saving comes from {LEVER_LABELS[best.name]} "
                         f"({usd(best.usd_per_hour_saved)} per hour): {best.explanation.rstrip('.')}.")
    if plan.binding_constraints:
        sentences.append("Binding constraints: " + "; ".join(plan.binding_constraints) + ".")
    capacity = provenance_summary(capacity_provenances(plan))
    sentences.append(f"Replica capacities are {capacity}.")
    return " ".join(sentences)
