"""Solve the plan for one set of levers, availability included: the spot tiers (spot.py) are rows of the MILP, and
at most `MAX_AVAILABILITY_ROUNDS` solves settle which tier each service gets."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from . import spot
from .context import Context
from .milp_model import Problem, Solution
from .optimizer import solve
from .placement import lay_out_gpus
from .problem import problem_for

# Solves per lever set: the tiered MILP, one more if a service filled its tier's spot limit, one safety net.
MAX_AVAILABILITY_ROUNDS = 3


@dataclass
class Solved:
    problem: Problem
    solution: Solution
    availability: dict[str, float]
    rounds: int
    tiers: dict[str, spot.SpotTier] = field(default_factory=dict)


def worst_replica_down_probability(ctx: Context) -> float:
    """The largest share of time one spot replica is down, over the spot offers' interruption rates."""
    rates = [o.interruption_rate_per_hour for o in ctx.offers if o.offer.market == "spot"]
    assumptions = ctx.workload.constraints.spot
    return max((spot.replica_unavailability(assumptions, rate) for rate in rates), default=0.0)


def service_availability(ctx: Context, problem: Problem, solution: Solution) -> dict[str, float]:
    """P(capacity >= peak) per service, spot instances (all their GPUs) failing together."""
    offers = {o.offer.key: o for o in ctx.offers}
    caps = {(e.service, e.variant, e.gpu, e.slice): ctx.planned_capacity(e) for e in ctx.evals}
    on_demand_rps: dict[str, float] = defaultdict(float)
    spot_units: dict[str, list[float]] = defaultdict(list)
    rates = []
    for placed, count in lay_out_gpus(problem, solution):
        info = offers[placed.offer]
        per_gpu: dict[str, float] = defaultdict(float)
        for slice_name, svc, var, _ in placed.assignment:
            per_gpu[svc] += caps[(svc, var, info.offer.gpu, slice_name)]
        for svc, cap in per_gpu.items():
            if info.offer.market == "spot":
                # Instances fail whole; GPUs of one instance are counted together where the instance holds several.
                gpus_per_instance = info.offer.gpus_per_instance
                full, rest = divmod(count, gpus_per_instance)
                spot_units[svc] += [cap * gpus_per_instance] * full + ([cap * rest] if rest else [])
                rates.append(info.interruption_rate_per_hour)
            else:
                on_demand_rps[svc] += cap * count
    assumptions = ctx.workload.constraints.spot
    replica_down = max((spot.replica_unavailability(assumptions, r) for r in rates), default=0.0)
    return {
        sc.service.name: spot.availability(on_demand_rps[sc.service.name], spot_units[sc.service.name],
                                           sc.demand_rps, assumptions, replica_down)
        for sc in ctx.services
    }


def spot_tiers(ctx: Context) -> list[spot.SpotTier]:
    """The spot tiers every service may use (spot.spot_tiers), at the worst interruption rate on offer."""
    return spot.spot_tiers(ctx.availability_target, ctx.workload.constraints.spot,
                           worst_replica_down_probability(ctx))


def spot_replicas(solution: Solution, problem: Problem) -> dict[str, int]:
    market = {o.key: o.market for o in problem.offers}
    out: dict[str, int] = defaultdict(int)
    for (offer_key, _, svc, _), n in solution.replicas.items():
        if market[offer_key] == "spot":
            out[svc] += n
    return out


def solve_levers(ctx: Context, levers: frozenset[str], time_limit_s: float | None = None) -> Solved | None:
    """Optimal plan with these levers, its availability guaranteed by the MILP itself (spot tiers, spot.py).

    Round 1 gives every service the least conservative tier. Round 2, only if some service filled its tier's spot
    replica limit: those services move to the next tier (more spot replicas allowed, each counting less), and the
    cheaper of the two plans is kept (both meet the target). A last round would move any service the exact check
    still finds short to on-demand carrying its peak; the tiers' proof (spot.spot_tiers, checked on random fleets in
    tests/unit/test_plan_spot.py) says it never runs. So at most MAX_AVAILABILITY_ROUNDS solves."""
    tiers = spot_tiers(ctx) if "spot" in levers else []
    level = {sc.service.name: 0 for sc in ctx.services}

    def attempt(rounds: int) -> Solved | None:
        assigned = {svc: tiers[i] for svc, i in level.items()} if tiers else {}
        problem = problem_for(ctx, levers, assigned, time_limit_s=time_limit_s)
        solution = solve(problem)
        if not solution.has_plan:
            return None
        return Solved(problem, solution, service_availability(ctx, problem, solution), rounds, assigned)

    best = attempt(1)
    if best is None or not tiers:
        return best
    rounds = 1
    used = spot_replicas(best.solution, best.problem)
    capped = [svc for svc, i in level.items()
              if tiers[i].max_spot_replicas is not None and used.get(svc, 0) >= tiers[i].max_spot_replicas]
    if capped:
        for svc in capped:
            level[svc] += 1
        rounds += 1
        other = attempt(rounds)
        if other is not None and other.solution.usd_per_hour < best.solution.usd_per_hour - 1e-9:
            best = other
    short = [s for s, a in best.availability.items() if a < ctx.availability_target]
    if short:
        for svc in short:
            level[svc] = len(tiers) - 1
        rounds += 1
        best = attempt(rounds) or best
    best.rounds = rounds
    return best
