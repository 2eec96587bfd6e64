"""From a solved MILP to the Plan's parts: node groups (GPUs, MIG layouts in creation order, replicas), the cost
summary, every candidate option for the report, per-service explanations and the binding constraints."""

from __future__ import annotations

import math
from collections import defaultdict

from vlmopt.hw import mig
from vlmopt.schemas.plan import Candidate, CostSummary, GpuAssignment, NodeGroup, Replica, ServicePlan

from . import explain, spot
from .context import Context
from .milp_model import WHOLE
from .placement import PlacedGpu, lay_out_gpus
from .solve import Solved, spot_replicas, worst_on_demand_down_probability, worst_replica_down_probability


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _replica(ctx: Context, gpu: str, slice_name: str, service: str, variant: str, mig_start: int | None) -> Replica:
    e = ctx.eval_of[(service, variant, gpu, slice_name)]
    cap = e.capacity
    return Replica(
        service=service,
        variant=variant,
        slice=slice_name,
        mig_start=mig_start,
        server_args=e.server_args,
        capacity_rps=round(cap.capacity_rps, 6),
        capacity_provenance=cap.provenance,
        capacity_low_rps=_rounded(cap.low_rps),
        capacity_high_rps=_rounded(cap.high_rps),
        capacity_band=cap.band or None,
        kv_token_capacity=e.fit.kv_token_capacity,
        memory_gib=e.fit.breakdown(),
        # Sized for the most the plan may send it: its capacity at the SLO (after a loss elsewhere it runs there).
        host=e.host_sizing(cap.capacity_rps),
    )


def _gpu_assignment(ctx: Context, placed: PlacedGpu) -> GpuAssignment:
    """One GPU's replicas; on MIG, its instances in an order that creates them (hw/mig.py) with their starts."""
    gpu = ctx.gpus[placed.layout.gpu]
    if not placed.layout.is_mig:
        return GpuAssignment(mig_layout=None, mig_placements=None, replicas=[
            _replica(ctx, gpu.id, slice_name, svc, var, None) for slice_name, svc, var, _ in placed.assignment])
    names, starts, order = mig.creation_sequence(gpu, [a[0] for a in placed.assignment],
                                                 [a[3] for a in placed.assignment])
    replicas = []
    for index, start in zip(order, starts, strict=True):
        slice_name, svc, var, _ = placed.assignment[index]
        replicas.append(_replica(ctx, gpu.id, slice_name, svc, var, start))
    return GpuAssignment(mig_layout=names, mig_placements=starts, replicas=replicas)


def node_groups(ctx: Context, solved: Solved) -> list[NodeGroup]:
    offers = {o.offer.key: o for o in ctx.offers}
    placed = lay_out_gpus(solved.problem, solved.solution)
    used: dict[str, int] = defaultdict(int)
    largest: dict[str, PlacedGpu] = {}
    count_of = dict(placed)
    for gpu_placed, n in placed:
        used[gpu_placed.offer] += n
        if gpu_placed.offer not in largest or n > count_of[largest[gpu_placed.offer]]:
            largest[gpu_placed.offer] = gpu_placed
    groups: list[NodeGroup] = []
    counter: dict[str, int] = defaultdict(int)
    for gpu_placed, n in placed:
        info = offers[gpu_placed.offer]
        offer = info.offer
        instances_bought = solved.solution.instances[gpu_placed.offer]
        bought = instances_bought * offer.gpus_per_instance
        if largest[gpu_placed.offer] is gpu_placed:
            n += bought - used[gpu_placed.offer]  # idle GPUs of a bought instance run more replicas, for free
        price_per_gpu = offer.usd_per_instance_hour * instances_bought / bought
        assignment = _gpu_assignment(ctx, gpu_placed)
        whole, rest = divmod(n, offer.gpus_per_instance)
        shape = [(whole, offer.gpus_per_instance)] if whole else []
        if rest:
            shape.append((1, rest))  # part of an instance whose other GPUs run another layout
        for instances, gpus_per_instance in shape:
            counter[offer.gpu] += 1
            groups.append(
                NodeGroup(
                    name=f"{offer.gpu}-{offer.market.replace('_', '-')}-{counter[offer.gpu]}",
                    gpu=offer.gpu,
                    cloud=info.cloud,
                    region=info.region,
                    instance_type=info.instance_type,
                    market=offer.market,
                    gpus_per_instance=gpus_per_instance,
                    instances=instances,
                    gpu_layout=assignment,
                    usd_per_hour=round(price_per_gpu * instances * gpus_per_instance, 6),
                    price_provenance=info.provenance,
                )
            )
    return groups


def costs(ctx: Context, groups: list[NodeGroup]) -> CostSummary:
    """Priced, expected (spot fallback) and worst-case $/h, and unit costs at the workload's mean load."""
    on_demand_price: dict[str, float] = {}
    for o in ctx.offers:
        if o.offer.market == "on_demand":
            on_demand_price[o.offer.gpu] = min(on_demand_price.get(o.offer.gpu, math.inf), o.offer.usd_per_gpu_hour)
    on_demand_usd = sum(g.usd_per_hour for g in groups if g.market == "on_demand")
    spot_usd = sum(g.usd_per_hour for g in groups if g.market == "spot")
    fallback_usd = 0.0
    for g in groups:
        if g.market == "spot":
            gpus = g.instances * g.gpus_per_instance
            fallback_usd += gpus * on_demand_price.get(g.gpu, g.usd_per_hour / max(gpus, 1))
    assumptions = ctx.workload.constraints.spot
    priced = spot.spot_cost(on_demand_usd, spot_usd, fallback_usd, assumptions, worst_replica_down_probability(ctx))
    tokens = sum((s.mean_rps or s.peak_rps) * s.output_tokens * 3600 for s in ctx.workload.services)
    images = sum((s.mean_rps or s.peak_rps) * s.images_per_request * 3600 for s in ctx.workload.services)
    has_spot = spot_usd > 0
    return explain.cost_summary(
        priced.usd_per_hour, tokens, images,
        priced.expected_usd_per_hour if has_spot else priced.usd_per_hour,
        priced.worst_case_usd_per_hour if has_spot else priced.usd_per_hour,
    )


def candidates(ctx: Context) -> list[Candidate]:
    """Every option in every market, for the report. Built with `model_construct`: every field comes from this
    module's own typed values (a large workload has tens of thousands of them; validating each would cost more
    than the whole MILP)."""
    markets: dict[str, dict[str, float]] = defaultdict(dict)
    for o in ctx.offers:
        prev = markets[o.offer.gpu].get(o.offer.market, math.inf)
        markets[o.offer.gpu][o.offer.market] = min(prev, o.offer.usd_per_gpu_hour)
    priced = {g: sorted(m.items()) for g, m in markets.items()}
    outs = {sc.service.name: sc.service.output_tokens for sc in ctx.services}
    fractions: dict[tuple[str, str], float] = {}
    out = []
    for e in ctx.evals:
        if (e.gpu, e.slice) not in fractions:
            gpu = ctx.gpus[e.gpu]
            fractions[(e.gpu, e.slice)] = (1.0 if e.slice == WHOLE else
                                           gpu.mig_profile(e.slice).compute_slices / gpu.mig.compute_slices)
        fraction = fractions[(e.gpu, e.slice)]
        at = e.capacity.at_capacity
        capacity = round(e.capacity.capacity_rps, 6)
        low, high = _rounded(e.capacity.low_rps), _rounded(e.capacity.high_rps)
        p95 = round(at.e2el_p95_ms, 3) if at else None
        tokens_per_hour = e.capacity.capacity_rps * outs[e.service] * 3600
        for market, price in priced[e.gpu]:
            per_replica = price * fraction
            out.append(
                Candidate.model_construct(
                    service=e.service,
                    variant=e.variant,
                    gpu=e.gpu,
                    slice=e.slice,
                    market=market,
                    fits=e.fit.fits,
                    meets_slo=e.usable,
                    capacity_rps=capacity,
                    capacity_low_rps=low,
                    capacity_high_rps=high,
                    capacity_band=e.capacity.band or None,
                    usd_per_hour_per_replica=round(per_replica, 6),
                    p95_latency_ms=p95,
                    usd_per_million_output_tokens=(round(per_replica / (tokens_per_hour / 1e6), 6)
                                                   if tokens_per_hour > 0 else None),
                    reason=e.reason,
                    provenance=e.capacity.provenance,
                )
            )
    return out


def service_plans(ctx: Context, solved: Solved, groups: list[NodeGroup],
                  all_candidates: list[Candidate]) -> list[ServicePlan]:
    c = ctx.workload.constraints
    by_service: dict[str, list[Candidate]] = defaultdict(list)
    for cand in all_candidates:
        by_service[cand.service].append(cand)
    provided: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for g in groups:
        gpus = g.instances * g.gpus_per_instance
        for r in g.gpu_layout.replicas:
            # What the plan counts on: with --robust, each capacity at the low end of its band.
            provided[r.service] += ctx.planned_capacity(ctx.eval_of[(r.service, r.variant, g.gpu, r.slice)]) * gpus
            count[r.service] += gpus
    out = []
    for sc in ctx.services:
        name = sc.service.name
        variant = solved.solution.variant_of[name]
        chosen = next(v for v in sc.variants if v.name == variant)
        floor = sc.service.quality
        if floor.max_kl is None and floor.min_top1_agreement is None:
            quality = "no quality floor set"
        else:
            quality = (f"quality floor met: KL {chosen.mean_kl:g}, top-1 {chosen.top1_agreement:g} "
                       f"({chosen.fidelity_provenance.kind})")
        where: dict[str, int] = defaultdict(int)
        for g in groups:
            for r in g.gpu_layout.replicas:
                if r.service == name:
                    where[f"{g.gpu} {r.slice} {g.market.replace('_', '-')}"] += g.instances * g.gpus_per_instance
        deployed = ", ".join(f"{n} x {k}" for k, n in sorted(where.items()))
        out.append(
            ServicePlan(
                service=name,
                model=sc.service.model,
                variant=variant,
                why=explain.why_variant(name, variant, by_service.get(name, []), quality, sc.excluded, deployed),
                required_rps=round(sc.demand_rps * (1 + c.headroom), 6),
                provided_rps=round(provided[name], 6),
                replicas=count[name],
                availability=round(solved.availability.get(name, 1.0), 9),
                fidelity={"mean_kl": chosen.mean_kl, "top1_agreement": chosen.top1_agreement},
                slo=sc.service.slo.as_dict(),
            )
        )
    return out


def binding_constraints(ctx: Context, solved: Solved) -> list[str]:
    out = []
    chosen = {(r.service, r.variant, r.gpu, r.slice) for r in solved.problem.options}
    gpu_of_offer = {o.key: o.gpu for o in solved.problem.offers}
    used = {(svc, var, gpu_of_offer[offer_key], slice_name)
            for (offer_key, slice_name, svc, var) in solved.solution.replicas}
    keys = defaultdict(set)
    for e in ctx.evals:
        if (e.service, e.variant, e.gpu, e.slice) in used & chosen and e.capacity.binding_key:
            keys[e.service].add(e.capacity.binding_key)
    for svc, ks in sorted(keys.items()):
        out.append(f"{svc}: replica capacity is limited by {', '.join(sorted(ks))}")
    if ctx.options.robust:
        out.append("robust: every replica counted at the low end of its capacity's error band (docs/cost-model.md"
                   "#error-bands)")
    for svc, a in sorted(solved.availability.items()):
        if a < ctx.availability_target:
            out.append(f"{svc}: availability {a:.6f} below the target {ctx.availability_target} after "
                       f"{solved.rounds} solve(s)")
    on_spot = spot_replicas(solved.solution, solved.problem)
    for svc in sorted(set(on_spot) | {s for s, t in solved.tiers.items() if t.on_demand_fails}):
        tier = solved.tiers.get(svc)
        if tier is None:
            continue
        if tier.events is None:
            rule = "on-demand carries the peak alone; spot only adds headroom"
        elif not tier.spot_counts:
            limit = f", at most {tier.max_spot_replicas} on-demand instances" if tier.max_spot_replicas else ""
            rule = (f"on-demand capacity survives the loss of any {tier.events} on-demand instance(s), each down "
                    f"{worst_on_demand_down_probability(ctx):.2%} of the time at the clouds' single-instance SLA "
                    f"floor{limit}; spot only adds headroom")
        else:
            what = "instances that can fail" if tier.on_demand_fails else "spot replicas"
            also = " or an on-demand instance" if tier.on_demand_fails else ""
            limit = f", at most {tier.max_spot_replicas} {what}" if tier.max_spot_replicas else ""
            rule = (f"capacity survives any {tier.events} loss(es) of a zone's spot capacity or of its largest spot "
                    f"instance{also}{limit}")
        out.append(f"{svc}: availability {solved.availability.get(svc, 1.0):.6f} >= target "
                   f"{ctx.availability_target}: {rule}")
    return out
