"""When nothing meets the workload: name the binding constraint in plain words (PlanInfeasible's message)."""

from __future__ import annotations

import math
from collections import defaultdict

from . import options
from .context import Context
from .errors import PlanInfeasible
from .milp_model import WHOLE
from .optimizer import solve
from .problem import problem_for


def diagnose(ctx: Context) -> None:
    """Raise PlanInfeasible naming the first constraint no option can meet, service by service."""
    c = ctx.workload.constraints
    evals_of: dict[str, list[options.OptionEval]] = defaultdict(list)
    for e in ctx.evals:
        evals_of[e.service].append(e)
    for sc in ctx.services:
        service, where = sc.service, sc.where
        if not sc.variants:
            detail = "; ".join(f"{k}: {v}" for k, v in sc.excluded.items())
            raise PlanInfeasible(f"{where}.quality: no variant of {sc.arch.name} meets the quality floor ({detail})")
        mine = evals_of[service.name]
        fitting = [e for e in mine if e.fit.fits]
        if not fitting:
            smallest = min(sc.variants, key=lambda v: options.memory.weight_bytes(sc.arch, v.scheme, v.bytes_on_disk))
            largest = max((ctx.gpus[e.gpu] for e in mine), key=lambda g: g.memory_gib)
            fit = next(e.fit for e in mine if e.gpu == largest.id and e.slice == WHOLE and e.variant == smallest.name)
            allowed = "allowed " if c.gpus else ""
            raise PlanInfeasible(
                f"no GPU in the {allowed}catalog fits {sc.arch.name} {smallest.name} at max_model_len "
                f"{service.max_model_len} on one device (largest offered: {largest.id}: {fit.reason}); "
                f"lower {where}.max_model_len, allow a smaller variant, or offer a larger GPU"
            )
        if not any(e.usable for e in fitting):
            raise PlanInfeasible(_slo_out_of_reach(sc.service.slo.as_dict(), fitting, where))


def _slo_out_of_reach(slo: dict[str, float], fitting: list[options.OptionEval], where: str) -> str:
    best: dict[str, float] = {}
    for e in fitting:
        idle = e.capacity.at_zero_load
        if idle is None:
            continue
        for key in slo:
            best[key] = min(best.get(key, math.inf), idle.value(key))
    failing = [key for key in slo if best.get(key, math.inf) > slo[key]]
    key = failing[0] if failing else next(iter(slo))
    reached = best.get(key)
    reached_txt = f"{reached:.0f} ms" if reached is not None and math.isfinite(reached) else "nothing"
    return (f"{where}.slo.{key} = {slo[key]:g} ms is below what any option reaches: the best predicted "
            f"{key} at zero load is {reached_txt} ({len(fitting)} fitting options of variant x GPU x slice)")


def explain_milp_failure(ctx: Context, levers: frozenset[str]) -> str:
    """Name the binding constraint of an infeasible MILP by re-solving with one constraint group relaxed."""
    c = ctx.workload.constraints
    if c.max_gpus:
        relaxed = solve(problem_for(ctx, levers, {}, quotas=False))  # without spot tiers: a looser problem
        if relaxed.ok:
            gpu_of_offer = {o.offer.key: o.offer.gpu for o in ctx.offers}
            used: dict[str, int] = defaultdict(int)
            for (offer_key, _), count in relaxed.gpus.items():
                used[gpu_of_offer[offer_key]] += count
            over = {g: used[g] for g, quota in c.max_gpus.items() if used[g] > quota}
            return (f"constraints.max_gpus: the quota {dict(c.max_gpus)} is too small; without it the plan uses "
                    f"{dict(over) or dict(used)} GPUs")
    stocks = [o.offer for o in ctx.offers if o.offer.stock_gpus is not None]
    if stocks:
        have = {o.gpu: o.stock_gpus for o in stocks}
        return f"inventory: the fleet's GPUs {have} cannot carry the peak load at the SLO"
    return "the capacity, zone-loss and single-variant constraints cannot all be met with the offered GPUs"
