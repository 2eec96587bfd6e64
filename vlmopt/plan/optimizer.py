"""The planner's mixed-integer program, solved with scipy.optimize.milp (HiGHS), one independent part at a time.

Mélange-style cost-aware bin packing extended with MIG layouts, a market dimension and spot tiers; the variables
and rows are in milp_build.py and docs/cost-model.md#3-the-optimizer-optimizerpy. Counting slices per (offer,
profile) instead of per physical GPU is exact: the slices of one profile across the n GPUs of an offer are
interchangeable, so any counts y <= n * count can be laid out GPU by GPU (placement.py `lay_out_gpus`).

Decomposition (`independent_parts`): the objective is a sum over offers, and a service's own rows (capacity,
floor, spot groups, one variant) name only its own replicas. Services interact only through a resource two of
them can draw on: MIG slices of one offer (slices of one GPU can go to different services), a multi-GPU instance,
a fleet pool's stock, or a GPU type's quota. Services connected through such resources form one part; parts share
nothing, so the optimum is the sum of the parts' optima, each solved as its own smaller MILP.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .milp_build import Milp, build_milp
from .milp_model import WHOLE, Layout, Problem, Solution

__all__ = ["WHOLE", "independent_parts", "solve"]

SOLVER_NAME = "scipy.optimize.milp (HiGHS)"


def _shared_resources(problem: Problem, service: str) -> set[tuple[str, str]]:
    """What this service's options draw on that another service's options could draw on too."""
    out: set[tuple[str, str]] = set()
    by_gpu = defaultdict(list)
    for offer in problem.offers:
        by_gpu[offer.gpu].append(offer)
    for opt in problem.options:
        if opt.service != service or opt.capacity_rps <= 0:
            continue
        if opt.gpu in problem.quotas:
            out.add(("quota", opt.gpu))
        for offer in by_gpu[opt.gpu]:
            if not problem.on_offer(opt, offer):
                continue
            if opt.slice != WHOLE or offer.gpus_per_instance > 1 or offer.stock_gpus is not None:
                out.add(("offer", offer.key))
    return out


def independent_parts(problem: Problem) -> list[Problem]:
    """Split the problem into parts that share no resource (see the module docstring), in service order."""
    services = [d.service for d in problem.demands]
    parent = {svc: svc for svc in services}

    def root(svc: str) -> str:
        while parent[svc] != svc:
            parent[svc] = parent[parent[svc]]
            svc = parent[svc]
        return svc

    holder: dict[tuple[str, str], str] = {}
    for svc in services:
        for resource in _shared_resources(problem, svc):
            if resource in holder:
                parent[root(svc)] = root(holder[resource])
            else:
                holder[resource] = svc
    members: dict[str, list[str]] = defaultdict(list)
    for svc in services:
        members[root(svc)].append(svc)
    if len(members) == 1:
        return [problem]
    parts = []
    for names in members.values():  # dicts keep insertion order: parts come in the order of their first service
        wanted = set(names)
        parts.append(replace(problem, options=[o for o in problem.options if o.service in wanted],
                             demands=[d for d in problem.demands if d.service in wanted]))
    return parts


def solve(problem: Problem, decompose: bool = True) -> Solution:
    """The cheapest plan of `problem` (or the best found within its time limit), with the gap HiGHS proved.
    `decompose=False` solves it as one MILP (the tests compare the two)."""
    started = time.perf_counter()
    parts = independent_parts(problem) if decompose else [problem]
    built = [build_milp(part) for part in parts]
    for model in built:
        if isinstance(model, str):
            return Solution("infeasible", model)
    solutions = []
    for part, model in zip(parts, built, strict=True):
        assert not isinstance(model, str)
        left = problem.time_limit_s - (time.perf_counter() - started)
        solution = _solve_milp(part, model, max(left, 0.1))
        if not solution.has_plan:
            return _with_totals(problem, solution, [*solutions, solution], started, len(parts))
        solutions.append(solution)
    return _with_totals(problem, _merge(problem, solutions), solutions, started, len(parts))


def _solve_milp(problem: Problem, model: Milp, time_limit_s: float) -> Solution:
    n_vars = len(model.cost)
    stats: dict[str, float | int | str] = {"variables": n_vars, "integer_variables": sum(model.integer),
                                           "constraints": len(model.row_lb)}
    constraints = []
    if model.row_lb:
        constraints.append(LinearConstraint(model.matrix(), np.array(model.row_lb), np.array(model.row_ub)))
    result = milp(
        c=np.array(model.cost),
        constraints=constraints,
        integrality=np.array(model.integer, dtype=int),
        bounds=Bounds(np.array(model.col_lb), np.array(model.col_ub)),
        options={"time_limit": time_limit_s, "mip_rel_gap": problem.mip_rel_gap, "disp": False},
    )
    stats["highs_status"] = int(result.status)
    if result.status == 2:
        return Solution("infeasible", "the mixed-integer program has no feasible solution", stats=stats)
    if result.x is None:
        return Solution("time_limit" if result.status == 1 else "error", str(result.message), stats=stats)

    x = np.round(result.x).astype(int)
    gpus = {key: int(x[i]) for key, i in model.gpu_cols.items() if x[i] > 0}
    replicas = {key: int(x[i]) for key, i in model.replica_cols.items() if x[i] > 0}
    variant_of: dict[str, str] = {}
    for (_, _, svc, var) in replicas:
        variant_of.setdefault(svc, var)
    bound = getattr(result, "mip_dual_bound", None)
    instances = _instances(problem, gpus)
    offers = {o.key: o for o in problem.offers}
    return Solution(
        "optimal" if result.status == 0 else "time_limit",
        str(result.message),
        usd_per_hour=sum(offers[o].usd_per_instance_hour * n for o, n in instances.items()),
        gpus=gpus,
        instances=instances,
        replicas=replicas,
        variant_of=variant_of,
        objective=float(result.fun),
        objective_bound=float(bound) if bound is not None and math.isfinite(bound) else None,
        stats=stats,
    )


def _instances(problem: Problem, gpus: dict[tuple[str, Layout], int]) -> dict[str, int]:
    offers = {o.key: o for o in problem.offers}
    per_offer: dict[str, int] = defaultdict(int)
    for (offer_key, _), count in gpus.items():
        per_offer[offer_key] += count
    return {key: math.ceil(count / offers[key].gpus_per_instance) for key, count in per_offer.items()}


def _merge(problem: Problem, parts: list[Solution]) -> Solution:
    gpus: dict[tuple[str, Layout], int] = defaultdict(int)
    replicas: dict[tuple[str, str, str, str], int] = {}
    variant_of: dict[str, str] = {}
    for part in parts:
        for key, count in part.gpus.items():
            gpus[key] += count
        replicas.update(part.replicas)
        variant_of.update(part.variant_of)
    instances = _instances(problem, dict(gpus))
    offers = {o.key: o for o in problem.offers}
    bounds = [p.objective_bound for p in parts]
    return Solution(
        "optimal" if all(p.status == "optimal" for p in parts) else "time_limit",
        "; ".join(dict.fromkeys(p.message for p in parts)),
        usd_per_hour=sum(offers[o].usd_per_instance_hour * n for o, n in instances.items()),
        gpus=dict(gpus),
        instances=instances,
        replicas=replicas,
        variant_of=variant_of,
        objective=sum(p.objective for p in parts),
        objective_bound=sum(b for b in bounds if b is not None) if all(b is not None for b in bounds) else None,
    )


def _with_totals(problem: Problem, solution: Solution, parts: list[Solution], started: float, n_parts: int) -> Solution:
    stats: dict[str, float | int | str] = {"solver": SOLVER_NAME}
    for key in ("variables", "integer_variables", "constraints"):
        stats[key] = sum(int(p.stats.get(key, 0)) for p in parts)
    stats["independent_parts"] = n_parts
    stats["solve_seconds"] = round(time.perf_counter() - started, 4)
    stats["highs_status"] = max((int(p.stats.get("highs_status", 0)) for p in parts), default=0)
    stats["mip_rel_gap_tolerance"] = problem.mip_rel_gap
    gap = solution.proven_gap
    if gap is not None:
        stats["proven_gap"] = round(gap, 6)  # (objective - proven lower bound) / objective, over all parts
    if solution.status == "time_limit" and solution.has_plan:
        stats["note"] = "time limit reached; best solution found is returned"
    solution.stats = stats
    return solution
