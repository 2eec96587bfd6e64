"""The optimizer's Problem for one set of levers: which offers, layouts and replica options it may use, and, above
`PRUNE_ABOVE_SERVICES` services, the heuristic that trims the option list first."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping

from . import spot
from .context import Context
from .milp_model import WHOLE, Demand, Layout, Offer, Problem, ReplicaOption

# Above this many services the option list is pruned before the MILP (see `prune`); below it the MILP sees every
# option and its answer is exactly optimal (tests/unit/test_plan_optimizer.py checks that against brute force).
PRUNE_ABOVE_SERVICES = 8
# Tuned on the scaling benchmark's instance (scripts/bench_planner_scaling.py, docs/plan.md): keeping more options
# (or variants) per service made the MILP much slower for little gain; keeping fewer made plans dearer.
PRUNE_KEEP_PER_VARIANT = 4
PRUNE_VARIANT_SLACK = 0.10
# On such pruned (already heuristic) problems HiGHS stops once its plan is proven within 0.1 % of the optimum of
# the pruned problem. The time limit is a safety net, not the usual way out: a wall-clock limit makes the plan
# depend on how loaded the machine is (on a busy 2-core machine 2.5 s once left a plan 1000x too dear). The plan's
# solver stats give the gap proven either way. Small problems solve to 1e-6.
LARGE_MIP_REL_GAP = 1e-3
LARGE_TIME_LIMIT_S = 300.0


def is_large(ctx: Context) -> bool:
    return len(ctx.services) > PRUNE_ABOVE_SERVICES


def problem_for(
    ctx: Context,
    levers: frozenset[str],
    tiers: Mapping[str, spot.SpotTier],
    quotas: bool = True,
    time_limit_s: float | None = None,
) -> Problem:
    """The MILP's inputs with these levers on: spot offers, MIG layouts, quantized variants only when allowed."""
    c = ctx.workload.constraints
    offers = [o.offer for o in ctx.offers if "spot" in levers or o.offer.market != "spot"]
    layouts = [lay for lay in ctx.layouts if "mig_packing" in levers or not lay.is_mig]
    baseline_only = "quantization" not in levers
    variant_scheme = {(sc.service.name, v.name): v.scheme for sc in ctx.services for v in sc.variants}
    replica_options = [
        ReplicaOption(e.service, e.variant, e.gpu, e.slice, ctx.planned_capacity(e))
        for e in ctx.evals
        if ctx.planned_capacity(e) > 0 and not (baseline_only and variant_scheme[(e.service, e.variant)] != "BF16")
        and (e.slice == WHOLE or "mig_packing" in levers)
    ]
    spot_mig = None
    if is_large(ctx):
        replica_options, spot_mig = prune(ctx, replica_options, offers, layouts, tiers)
    demands = [
        Demand(sc.service.name, sc.demand_rps * (1 + c.headroom), sc.demand_rps, tiers.get(sc.service.name))
        for sc in ctx.services
    ]
    slice_resources = {}
    for lay in layouts:
        geometry = ctx.gpus[lay.gpu].mig
        for profile in lay.slices if lay.is_mig and geometry is not None else ():
            spec = ctx.gpus[lay.gpu].mig_profile(profile)
            slice_resources[(lay.gpu, profile)] = (spec.compute_slices / geometry.compute_slices,
                                                   spec.memory_slices / geometry.memory_slots)
    problem = Problem(offers, layouts, replica_options, demands, quotas=dict(c.max_gpus) if quotas else {},
                      spot_mig=spot_mig, mig_slice_resources=slice_resources)
    if is_large(ctx):
        problem.mip_rel_gap = LARGE_MIP_REL_GAP
        problem.time_limit_s = LARGE_TIME_LIMIT_S
    if time_limit_s is not None:
        problem.time_limit_s = min(problem.time_limit_s, time_limit_s)
    return problem


def cheapest_by_size(
    group: list[ReplicaOption], price: Callable[[ReplicaOption], float], required_rps: float
) -> list[ReplicaOption]:
    """The options no other option beats on both price per replica and capacity, from the cheapest up to the
    first one that alone carries the service: what a small service picks from, whatever its $/h per req/s."""
    out: list[ReplicaOption] = []
    largest = -1.0
    for opt in sorted(group, key=lambda o: (price(o), -o.capacity_rps)):
        if opt.capacity_rps > largest + 1e-12 and math.isfinite(price(opt)):
            out.append(opt)
            largest = opt.capacity_rps
            if largest >= required_rps:
                break
    return out


def prune(
    ctx: Context,
    replica_options: list[ReplicaOption],
    offers: list[Offer],
    layouts: list[Layout],
    tiers: Mapping[str, spot.SpotTier],
) -> tuple[list[ReplicaOption], frozenset[ReplicaOption]]:
    """Heuristic for large workloads: per service keep the variants whose best $/h per req/s (GPU price x slice
    share / capacity) is within 10 % of the service's best. Per (service, variant, market) keep the 4 most
    cost-efficient (GPU, slice) options, whole GPUs and MIG slices apart (what big services pack onto), the
    cheap-and-big-enough frontier
    (`cheapest_by_size`: what small services fit in), and on spot the 4 most cost-efficient per req/s that survives
    the service's spot tier (capacity minus k/Z of the most one instance can hold: what the availability rule counts;
    small MIG slices of a big GPU count little there). On spot, whole GPUs only: the spot rule counts the loss of a
    MIG instance as every slice it could hold, so spot slices rarely pay, yet they made the MILP several times
    slower to prove (docs/plan.md#planner-scaling). Returns the options and the MIG options allowed on spot (none).
    Exactness is traded for solve time; the plan's solver stats say so."""
    price: dict[tuple[str, str], float] = {}
    for o in offers:
        key = (o.gpu, o.market)
        price[key] = min(price.get(key, math.inf), o.usd_per_gpu_hour)
    spot_gpus_per_instance = {o.gpu: o.gpus_per_instance for o in offers if o.market == "spot"}
    markets = sorted({o.market for o in offers})
    share = {}
    for opt in replica_options:
        if (opt.gpu, opt.slice) not in share:
            gpu = ctx.gpus[opt.gpu]
            share[(opt.gpu, opt.slice)] = (1.0 if opt.slice == WHOLE else
                                           gpu.mig_profile(opt.slice).compute_slices / gpu.mig.compute_slices)

    def efficiency(opt: ReplicaOption, market: str) -> float:
        return price.get((opt.gpu, market), math.inf) * share[(opt.gpu, opt.slice)] / opt.capacity_rps

    def kept_of(kind: list[ReplicaOption]) -> set[ReplicaOption]:
        by_sv: dict[tuple[str, str], list[ReplicaOption]] = defaultdict(list)
        for opt in kind:
            by_sv[(opt.service, opt.variant)].append(opt)
        demand_of = {sc.service.name: sc.demand_rps * (1 + ctx.workload.constraints.headroom) for sc in ctx.services}
        slices_of: dict[str, set[tuple[str, ...]]] = defaultdict(set)  # layouts differing only in starts count once
        for lay in layouts:
            slices_of[lay.gpu].add(tuple(sorted(lay.slices)))

        def instance_capacity(group: list[ReplicaOption]) -> dict[str, float]:
            cap = {(o.gpu, o.slice): o.capacity_rps for o in group}
            return {g: spot_gpus_per_instance.get(g, 1) * max(sum(cap.get((g, p), 0.0) for p in sl)
                                                              for sl in slices_of[g])
                    for g in {o.gpu for o in group}}

        best_of_variant = {sv: min(efficiency(o, m) for o in group for m in markets) for sv, group in by_sv.items()}
        best_of_service: dict[str, float] = defaultdict(lambda: math.inf)
        for (svc, _), value in best_of_variant.items():
            best_of_service[svc] = min(best_of_service[svc], value)
        kept: set[ReplicaOption] = set()
        for (svc, var), group in by_sv.items():
            if best_of_variant[(svc, var)] > best_of_service[svc] * (1 + PRUNE_VARIANT_SLACK):
                continue
            for market in markets:
                kept.update(sorted(group, key=lambda o, m=market: efficiency(o, m))[:PRUNE_KEEP_PER_VARIANT])
                kept.update(cheapest_by_size(group, lambda o, m=market: efficiency(o, m) * o.capacity_rps,
                                             demand_of[svc]))
            tier = tiers.get(svc)
            if "spot" in markets and tier is not None and tier.events and tier.spot_counts:
                unit = instance_capacity(group)
                ratio = tier.events / tier.zones

                def survives(o: ReplicaOption, unit=unit, ratio=ratio) -> float:
                    left = o.capacity_rps - ratio * unit[o.gpu]
                    if left <= 0:
                        return math.inf
                    return price.get((o.gpu, "spot"), math.inf) * share[(o.gpu, o.slice)] / left

                ranked = sorted((o for o in group if math.isfinite(survives(o))), key=survives)
                kept.update(ranked[:PRUNE_KEEP_PER_VARIANT])
        return kept

    # Whole GPUs and MIG slices are ranked apart, so the options kept with MIG packing on include every whole-GPU
    # option kept without it: turning a lever on never loses an option (its plan never costs more).
    kept = (kept_of([o for o in replica_options if o.slice == WHOLE])
            | kept_of([o for o in replica_options if o.slice != WHOLE]))
    return [o for o in replica_options if o in kept], frozenset()
