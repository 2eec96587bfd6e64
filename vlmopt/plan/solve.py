"""Solve the plan for one set of levers, availability included: the availability tiers (spot.py: spot tiers, and
on-demand tiers when on-demand instances fail, sla.py) are rows of the MILP, and at most `MAX_AVAILABILITY_ROUNDS`
solves settle which tier each service gets."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

from . import spot
from .by_service import ServiceCache, refine, relax_and_pack
from .context import Context
from .milp_model import Problem, Solution, SpotGroup, on_demand_units_used, spot_unit_capacity
from .optimizer import solve
from .placement import lay_out_gpus
from .problem import PRUNE_ABOVE_SERVICES, problem_for

# Solves per lever set: the tiered MILP, one more if a service filled its tier's spot limit, one safety net.
MAX_AVAILABILITY_ROUNDS = 3
# Solves per round with a fixed on-demand loss before the exact model decides (`solve_with_on_demand_losses`).
MAX_LOSS_SOLVES = 4


@dataclass
class Solved:
    problem: Problem
    solution: Solution
    availability: dict[str, float]
    rounds: int
    tiers: dict[str, spot.SpotTier] = field(default_factory=dict)
    solves: int = 1  # MILP solves made to find this plan (every round, the solves settling on-demand losses too)


def worst_replica_down_probability(ctx: Context) -> float:
    """The largest share of time one spot replica is down, over the spot offers' interruption rates."""
    rates = [o.interruption_rate_per_hour for o in ctx.offers if o.offer.market == "spot"]
    assumptions = ctx.workload.constraints.spot
    return max((spot.replica_unavailability(assumptions, rate) for rate in rates), default=0.0)


def worst_on_demand_down_probability(ctx: Context) -> float:
    """The largest share of time one on-demand instance is down, over the on-demand offers (sla.py)."""
    return max((o.instance_unavailability for o in ctx.offers if o.offer.market != "spot"), default=0.0)


def service_availability(ctx: Context, problem: Problem, solution: Solution) -> dict[str, float]:
    """P(capacity >= peak) per service, instances (all their GPUs) failing together: spot ones by the spot model,
    on-demand ones independently at their offer's single-instance SLA floor."""
    offers = {o.offer.key: o for o in ctx.offers}
    caps = {(e.service, e.variant, e.gpu, e.slice): ctx.planned_capacity(e) for e in ctx.evals}
    on_demand_rps: dict[str, float] = defaultdict(float)
    on_demand_units: dict[str, list[tuple[float, float]]] = defaultdict(list)
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
            elif info.instance_unavailability > 0:
                gpus_per_instance = info.offer.gpus_per_instance
                full, rest = divmod(count, gpus_per_instance)
                p_down = info.instance_unavailability
                on_demand_units[svc] += ([(cap * gpus_per_instance, p_down)] * full
                                         + ([(cap * rest, p_down)] if rest else []))
            else:
                on_demand_rps[svc] += cap * count
    assumptions = ctx.workload.constraints.spot
    replica_down = max((spot.replica_unavailability(assumptions, r) for r in rates), default=0.0)
    return {
        sc.service.name: spot.availability(on_demand_rps[sc.service.name], spot_units[sc.service.name],
                                           sc.demand_rps, assumptions, replica_down,
                                           on_demand_units[sc.service.name])
        for sc in ctx.services
    }


def spot_tiers(ctx: Context, spot_allowed: bool = True) -> list[spot.SpotTier]:
    """The availability tiers every service may use (spot.spot_tiers), at the worst interruption rate and the
    worst on-demand instance down share on offer; without spot, the on-demand tiers alone (none when on-demand
    instances are not modelled to fail)."""
    p_on_demand = worst_on_demand_down_probability(ctx)
    if not spot_allowed and p_on_demand <= 0:
        return []
    return spot.spot_tiers(ctx.availability_target, ctx.workload.constraints.spot,
                           worst_replica_down_probability(ctx), p_on_demand=p_on_demand, spot=spot_allowed)


def spot_replicas(solution: Solution, problem: Problem) -> dict[str, int]:
    market = {o.key: o.market for o in problem.offers}
    out: dict[str, int] = defaultdict(int)
    for (offer_key, _, svc, _), n in solution.replicas.items():
        if market[offer_key] == "spot":
            out[svc] += n
    return out


def failing_instances(solution: Solution, problem: Problem, tiers: dict[str, spot.SpotTier]) -> dict[str, int]:
    """Per service, the replicas its tier's limit counts: spot ones where spot counts, on-demand ones where
    on-demand instances fail."""
    market = {o.key: o.market for o in problem.offers}
    out: dict[str, int] = defaultdict(int)
    for (offer_key, _, svc, _), n in solution.replicas.items():
        tier = tiers.get(svc)
        if tier is None:
            continue
        on_spot = market[offer_key] == "spot"
        if (on_spot and tier.spot_counts and tier.events) or (not on_spot and tier.on_demand_fails):
            out[svc] += n
    return out


def _first_tier_holding(tiers: list[spot.SpotTier], replicas: int) -> int:
    """The least conservative tier whose limit allows `replicas` instances that can fail."""
    return next((i for i, t in enumerate(tiers) if t.max_spot_replicas is None or t.max_spot_replicas >= replicas),
                len(tiers) - 1)


def _replicas_needed(ctx: Context, generous: bool) -> dict[str, int]:
    """Per service, about how many replicas a plan needs: the requirement over its largest usable capacity, or
    (generous) twice that over its smallest, with slack for the losses a tier survives."""
    headroom = 1 + ctx.workload.constraints.headroom
    capacities: dict[str, list[float]] = defaultdict(list)
    for e in ctx.evals:
        capacities[e.service].append(ctx.planned_capacity(e))
    out = {}
    for sc in ctx.services:
        caps = [c for c in capacities[sc.service.name] if c > 0]
        need = sc.demand_rps * headroom
        if not caps:
            out[sc.service.name] = 1
        elif generous:
            out[sc.service.name] = 2 * math.ceil(need / min(caps)) + 2
        else:
            out[sc.service.name] = math.ceil(need / max(caps))
    return out


def _smallest_on_demand_units(units: dict[SpotGroup, float]) -> dict[str, float]:
    """Per service, the least capacity one of its on-demand instances can hold (> 0)."""
    smallest: dict[str, float] = {}
    for (svc, _, _, _), unit in units.items():
        if unit > 0:
            smallest[svc] = min(smallest.get(svc, unit), unit)
    return smallest


def _estimated_on_demand_units(problem: Problem, units: dict[SpotGroup, float]) -> dict[str, float]:
    """Per service, the capacity of one instance of the on-demand group that serves it alone most cheaply once the
    loss it must survive is paid for: instances = ceil((peak + k x unit) / unit), also enough for the required
    capacity. A guess of the instance a cost-minimal plan uses (sharing GPUs with other services can change it)."""
    price = {o.key: o.usd_per_instance_hour for o in problem.offers}
    demand_of = {d.service: d for d in problem.demands}
    best: dict[str, tuple[float, float]] = {}
    for (svc, offer_key, _, _), unit in units.items():
        demand = demand_of.get(svc)
        if unit <= 0 or demand is None or demand.spot_tier is None:
            continue
        events = demand.spot_tier.events or 0
        instances = max(math.ceil((demand.floor_rps + events * unit) / unit - 1e-9),
                        math.ceil(demand.required_rps / unit - 1e-9), 1)
        cost = instances * price[offer_key]
        if svc not in best or cost < best[svc][0]:
            best[svc] = (cost, unit)
    return {svc: unit for svc, (_, unit) in best.items()}


def solve_problem(problem: Problem, cache: ServiceCache | None = None) -> tuple[Solution, int]:
    """The plan of one problem and the MILP solves it took.

    First relax and pack (by_service.py): one exact MILP per service, MIG slices priced at their share of the GPU,
    gives a lower bound; packing the replicas they chose onto GPUs gives a plan. Above `PRUNE_ABOVE_SERVICES`
    services, where the relaxation chose MIG slices, those services are then solved together (`refine`). A plan
    within the problem's gap tolerance of the bound is the answer. Otherwise, up to `PRUNE_ABOVE_SERVICES`
    services (where plans are exact), the whole problem is solved (on-demand losses in rounds,
    `solve_with_on_demand_losses`) and the cheaper plan kept, with the higher of the two lower bounds; above, the
    plan is returned with the gap it proves (the whole problem took 56 s of CPU on the 50-service benchmark and
    proved less). `cache` keeps each service's relaxed optimum across calls with the same offers and layouts."""
    split = relax_and_pack(problem, cache)
    if split.infeasible is not None:
        return Solution("infeasible", split.infeasible), split.solves
    large = len(problem.demands) > PRUNE_ABOVE_SERVICES
    if large and split.solution is not None and split.gap > problem.mip_rel_gap:
        split = refine(problem, split, lambda part: solve_with_on_demand_losses(part)[0])
    if split.solution is not None and (split.gap <= problem.mip_rel_gap or large):
        split.solution.stats["method"] = "relax and pack"
        return split.solution, split.solves
    solution, solves = solve_with_on_demand_losses(problem)
    if split.solution is not None and (not solution.has_plan or split.solution.objective < solution.objective):
        solution = split.solution
    if solution.has_plan and math.isfinite(split.lower_bound):
        own = solution.objective_bound if solution.objective_bound is not None else -math.inf
        solution = solution.bound_by(max(own, split.lower_bound))
    return solution, solves + split.solves


def solve_with_on_demand_losses(problem: Problem) -> tuple[Solution, int]:
    """Solve, with what one failing on-demand instance takes fixed per service: a constant (charged only if the
    service has an on-demand replica at all: one binary per service), so the MILP needs no binary per on-demand
    group. Those binaries are exact, but with them HiGHS ran to its time limit on two services sharing MIG H100s and
    took 75 s of CPU on the 50-service benchmark; the rounds took 34 s there and came within 0.7 % of that cost.

    Round 1 fixes it at the service's smallest on-demand instance: a relaxation, so its cost is a lower bound on
    every plan's, and if the plan's own largest on-demand instance is no larger, the plan is optimal. Otherwise the
    services that fell short get the instance that would serve each alone most cheaply with its losses paid for;
    then, while a plan still uses a larger instance than its bound, the bound rises to what it used, and in the last
    round (MAX_LOSS_SOLVES) to the largest instance any plan may use. A plan whose instances all fit the bound it
    was solved with survives its tier's losses; it records, as its proven gap, how far above round 1's lower bound
    it can be. Only if a fixed bound leaves no plan at all (one that smaller instances would have met) does the
    exact model decide. Returns (solution, solves)."""
    failing = {d.service for d in problem.demands if d.spot_tier is not None and d.spot_tier.on_demand_fails
               and d.spot_tier.events}
    if not failing:
        return solve(problem), 1
    exact_demands = list(problem.demands)
    units = spot_unit_capacity(problem, ("on_demand",))  # options and offers stay fixed across the rounds
    bound = {svc: unit for svc, unit in _smallest_on_demand_units(units).items() if svc in failing}
    estimated = _estimated_on_demand_units(problem, units)
    largest: dict[str, float] = defaultdict(float)
    for (svc, _, _, _), unit in units.items():
        largest[svc] = max(largest[svc], unit)
    lower_bound: float | None = None
    solves = 0
    while solves < MAX_LOSS_SOLVES:
        problem.demands = [replace(d, on_demand_loss_rps=bound.get(d.service, 0.0)) if d.service in failing else d
                           for d in exact_demands]
        solution = solve(problem)
        solves += 1
        if not solution.has_plan:
            if lower_bound is None:
                return solution, solves  # the relaxation has no plan, so nothing has
            break
        if lower_bound is None:
            lower_bound = solution.objective_bound if solution.objective_bound is not None else solution.objective
        used = on_demand_units_used(problem, solution, units)
        short = [svc for svc in failing if used.get(svc, 0.0) > bound.get(svc, 0.0) + 1e-9]
        if not short:
            own = solution.objective_bound if solution.objective_bound is not None else solution.objective
            return solution.bound_by(min(own, lower_bound)), solves
        for svc in short:
            if solves + 1 == MAX_LOSS_SOLVES:
                bound[svc] = largest[svc]  # which every plan fits
            elif solves == 1:
                bound[svc] = max(estimated.get(svc, 0.0), bound.get(svc, 0.0))
            else:
                bound[svc] = max(used[svc], bound.get(svc, 0.0))
    problem.demands = exact_demands  # a fixed bound made it infeasible where smaller instances would fit
    return solve(problem), solves + 1


def solve_levers(ctx: Context, levers: frozenset[str], time_limit_s: float | None = None) -> Solved | None:
    """Optimal plan with these levers, its availability guaranteed by the MILP itself (tiers, spot.py).

    Round 1 gives every service the least conservative tier whose instance limit holds the replicas it needs at its
    largest capacity; if that is infeasible, the next tier, then tiers holding twice what its smallest capacity
    needs.
    Then, only if some service filled its tier's limit: those services move to the next tier (more instances
    allowed, each event counting more), and the cheaper of the two plans is kept (both meet the target). A last
    round would move any service the exact check still finds short to the most conservative tier; the tiers' proof
    (spot.spot_tiers, checked on random fleets in tests/unit/test_plan_spot.py) says it never runs. At most
    MAX_AVAILABILITY_ROUNDS solves."""
    tiers = spot_tiers(ctx, "spot" in levers)
    needed = _replicas_needed(ctx, generous=False)
    level = {sc.service.name: _first_tier_holding(tiers, needed[sc.service.name]) if tiers else 0
             for sc in ctx.services}

    def attempt(rounds: int) -> Solved | None:
        assigned = {svc: tiers[i] for svc, i in level.items()} if tiers else {}
        problem = problem_for(ctx, levers, assigned, time_limit_s=time_limit_s)
        solution, solves = solve_problem(problem, cache)
        total_solves[0] += solves
        if not solution.has_plan:
            return None
        return Solved(problem, solution, service_availability(ctx, problem, solution), rounds, assigned)

    total_solves = [0]
    cache: ServiceCache = {}  # the availability rounds change few services' tiers: the others are not re-solved

    best = attempt(1)
    rounds = 1
    if best is None and tiers:
        # A tier's instance limit may be what made it infeasible: the next tier first (the least conservative one
        # that may hold the plan: jumping straight to a generous limit can land on a tier that survives many losses
        # and costs far more), then tiers holding twice what the smallest capacity needs.
        generous = _replicas_needed(ctx, generous=True)
        ceiling = {svc: max(level[svc], _first_tier_holding(tiers, generous[svc])) for svc in level}
        for step in ("next", "generous"):
            if rounds >= MAX_AVAILABILITY_ROUNDS or all(level[svc] >= ceiling[svc] for svc in level):
                break
            for svc in level:
                level[svc] = min(level[svc] + 1, ceiling[svc]) if step == "next" else ceiling[svc]
            rounds += 1
            best = attempt(rounds)
            if best is not None:
                break
    if best is None or not tiers:
        return best
    used = failing_instances(best.solution, best.problem, best.tiers)
    capped = [svc for svc, i in level.items() if i + 1 < len(tiers)
              and tiers[i].max_spot_replicas is not None and used.get(svc, 0) >= tiers[i].max_spot_replicas]
    if capped and rounds < MAX_AVAILABILITY_ROUNDS:
        for svc in capped:
            level[svc] += 1
        rounds += 1
        other = attempt(rounds)
        if other is not None and other.solution.usd_per_hour < best.solution.usd_per_hour - 1e-9:
            best = other
    short = [s for s, a in best.availability.items() if a < ctx.availability_target]
    if short and rounds < MAX_AVAILABILITY_ROUNDS:
        for svc in short:
            level[svc] = len(tiers) - 1
        rounds += 1
        best = attempt(rounds) or best
    best.rounds = rounds
    best.solves = total_solves[0]
    return best
