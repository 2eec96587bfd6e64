"""Relax and pack: a lower bound on the plan's cost from one small MILP per service, and a plan that often meets it.

Services share nothing but GPUs cut into MIG slices of several services (and multi-GPU instances, quotas, fleet
stock). Price each MIG slice at a share of its GPU's price such that no layout's slices add up to more than the
GPU (`slice_price_shares`), and buy instances GPU by GPU: every real plan then costs at least what these prices
charge for its replicas, so the problem falls apart into one MILP per service whose optima add up to a lower bound
(a Lagrangian relaxation of the slice rows, with those shares as the multipliers). Each service's MILP keeps all its
own rows, the exact on-demand failure model included (a binary per on-demand group), and is small enough to prove.

Packing the services' chosen replicas onto real GPUs (the full MILP with every replica count fixed) gives a plan.
Where no MIG slice is chosen, or the slices fill their GPUs, plan and bound meet: it is optimal. Otherwise the
difference is the most the plan can be above the optimum, and the caller decides whether that is close enough
(docs/cost-model.md#3-the-optimizer-optimizerpy).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from .milp_model import WHOLE, Demand, Problem, ReplicaOption, Solution
from .optimizer import solve

# NVIDIA's MIG profile names start with the compute slices they hold ("3g.40gb"); the catalog check enforces it.
_COMPUTE_IN_NAME = re.compile(r"^(\d+)g\.")

# `refine` solves at most this many services together (more took minutes on the 50-service benchmark's lever
# steps); more move to whole GPUs one by one.
MAX_REFINED_SERVICES = 8

# Each service's relaxed optimum by (problem setting, demand, options): see `relax_and_pack`.
ServiceCache = dict[tuple, Solution]


@dataclass
class RelaxAndPack:
    lower_bound: float  # no plan of the problem costs less (objective units: $/h plus tie-breakers)
    solution: Solution | None  # the packed plan; None when packing failed (a shared quota or stock ran out)
    solves: int  # MILPs solved: one per service, and the packing
    infeasible: str | None = None  # why no plan exists at all, when one service alone has none
    service_bounds: dict[str, float] = field(default_factory=dict)  # each service's relaxed optimum (bound)
    chosen: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # the relaxed optima's replicas

    @property
    def gap(self) -> float:
        """How far above the optimum the packed plan can be, as a share of its cost (inf without a plan)."""
        if self.solution is None or not self.solution.has_plan:
            return math.inf
        return max(0.0, self.solution.objective - self.lower_bound) / max(abs(self.solution.objective), 1e-12)


def slice_price_shares(problem: Problem) -> dict[tuple[str, str], float]:
    """(GPU, MIG profile) -> the share of the GPU's price its slice pays in the relaxation: its share of the GPU's
    memory slices (no layout holds more memory slices than the GPU has, so the relaxation stays a lower bound).
    Memory rather than compute: a memory-heavy slice (1g.20gb: 1/7 of an H100's compute, 1/4 of its memory; four
    fit) would otherwise be priced far below what it costs, and the bound with it (on the scaling benchmark, under
    its earlier pruning, the bound was 113.0 $/h by compute shares, 117.9 by memory shares, the best plan 118.2;
    docs/cost-model.md#3-the-optimizer-optimizerpy). Without the catalog's
    counts, compute slices from the profile's name ("3g.40gb") over the most a layout holds, else one share per
    slice."""
    weights: dict[tuple[str, str], float] = {}
    by_gpu = defaultdict(list)
    for layout in problem.layouts:
        if layout.is_mig:
            by_gpu[layout.gpu].append(layout)
    for gpu, layouts in by_gpu.items():
        profiles = {p for layout in layouts for p in layout.slices}
        if all((gpu, p) in problem.mig_slice_resources for p in profiles):
            need = {p: problem.mig_slice_resources[(gpu, p)][1] for p in profiles}  # already shares of the GPU
            whole = 1.0
        else:
            named = {p: _compute_from_name(p) for p in profiles}
            known = None not in named.values()
            need = {p: n if known and n is not None else 1.0 for p, n in named.items()}
            whole = 0.0  # counts, not shares: scaled by the most a layout holds
        most = max(whole, max(sum(need[p] for p in layout.slices) for layout in layouts))
        for profile in profiles:
            weights[(gpu, profile)] = need[profile] / most
    return weights


def _compute_from_name(profile: str) -> float | None:
    match = _COMPUTE_IN_NAME.match(profile)
    return float(match.group(1)) if match else None


def relax_and_pack(problem: Problem, cache: ServiceCache | None = None) -> RelaxAndPack:
    """Solve each service alone at slice prices (a lower bound), then pack the replicas they chose onto GPUs.
    `cache` keeps each service's relaxed optimum for later calls on the same offers and layouts."""
    started = time.perf_counter()
    shares = slice_price_shares(problem)
    split = RelaxAndPack(0.0, None, 0)
    options_of: dict[str, list[ReplicaOption]] = defaultdict(list)
    for option in problem.options:
        options_of[option.service].append(option)
    setting = (tuple(problem.offers), tuple(problem.layouts), tuple(sorted(problem.quotas.items())),
               problem.single_variant, problem.mip_rel_gap, problem.spot_mig)
    keys = {d.service: (setting, d, tuple(options_of[d.service])) for d in problem.demands}
    cached = {svc: cache.get(key) for svc, key in keys.items()} if cache is not None else {}
    todo = [d for d in problem.demands if cached.get(d.service) is None]

    def solve_alone(demand: Demand) -> Solution:
        left = problem.time_limit_s - (time.perf_counter() - started)
        alone = replace(problem, options=options_of[demand.service], demands=[demand], slice_price_share=shares,
                        time_limit_s=max(left, 0.1))
        return solve(alone, decompose=False)

    # HiGHS releases the GIL: the services' MILPs run side by side (each is deterministic, so the order is not).
    with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1) or 1) as pool:
        solved = dict(zip((d.service for d in todo), pool.map(solve_alone, todo), strict=True))
    split.solves += len(todo)
    for demand in problem.demands:
        solution = cached.get(demand.service) or solved[demand.service]
        if cache is not None and solution.status in ("optimal", "infeasible"):
            cache[keys[demand.service]] = solution
        if solution.status == "infeasible":
            split.infeasible = f"service {demand.service!r}: {solution.message}"
            split.lower_bound = math.inf
            return split
        if not solution.has_plan or solution.objective_bound is None:
            split.lower_bound = -math.inf
            return split
        split.service_bounds[demand.service] = solution.objective_bound
        split.chosen.update(solution.replicas)
    split.lower_bound = sum(split.service_bounds.values())
    split.solution = _packed(problem, split.chosen, split.lower_bound, started)
    split.solves += 1
    return split


def mig_services(replicas: dict[tuple[str, str, str, str], int]) -> set[str]:
    """The services with a replica on a MIG slice."""
    return {svc for (_, profile, svc, _), count in replicas.items() if count > 0 and profile != WHOLE}


def refine(problem: Problem, split: RelaxAndPack, solve_part: Callable[[Problem], Solution]) -> RelaxAndPack:
    """A better plan where the relaxation chose MIG slices: up to `MAX_REFINED_SERVICES` such services are solved
    together (`solve_part`); more each move to their best plan on whole GPUs. The others keep their relaxed optima
    (whole GPUs, each already optimal for its service alone). Then packed; kept only if cheaper, so a plan with MIG
    allowed never costs more than its services on whole GPUs. The bound stays the relaxation's."""
    started = time.perf_counter()
    together = mig_services(split.chosen)
    if not together or split.solution is None:
        return split
    part = replace(problem, options=[o for o in problem.options if o.service in together],
                   demands=[d for d in problem.demands if d.service in together])
    if len(together) <= MAX_REFINED_SERVICES:
        plan = solve_part(part)
        solves = split.solves + 1
        replicas = plan.replicas if plan.has_plan else None
    else:
        whole = relax_and_pack(replace(part, options=[o for o in part.options if o.slice == WHOLE]))
        solves = split.solves + whole.solves
        replicas = whole.chosen if whole.infeasible is None and math.isfinite(whole.lower_bound) else None
    if replicas is None:
        return replace(split, solves=solves)
    fixed = {key: n for key, n in split.chosen.items() if key[2] not in together} | replicas
    packed = _packed(problem, fixed, split.lower_bound, started)
    solves += 1
    if packed is None or packed.objective >= split.solution.objective:
        return replace(split, solves=solves)
    return replace(split, solution=packed, solves=solves)


def _packed(problem: Problem, replicas: dict[tuple[str, str, str, str], int], lower_bound: float,
            started: float) -> Solution | None:
    """These replicas on the fewest-cost GPUs, with `lower_bound` as the plan's proven bound; None if they do not
    fit (a shared quota or stock)."""
    left = problem.time_limit_s - (time.perf_counter() - started)
    # Only the options on a GPU type where the service's variant has a replica: every other replica count is 0,
    # so the packing MILP stays small, and what one instance can hold (the loss rows) is as in the whole problem.
    gpu_of = {o.key: o.gpu for o in problem.offers}
    used = {(svc, var, gpu_of[offer]) for (offer, _, svc, var), n in replicas.items() if n > 0}
    options = [o for o in problem.options if (o.service, o.variant, o.gpu) in used]
    packed = solve(replace(problem, options=options, fixed_replicas=replicas, time_limit_s=max(left, 0.1)))
    if not packed.has_plan:
        return None
    # The packing's own bound is about packing these replicas, not about the problem: the relaxation's replaces it.
    packed.bound_by(lower_bound)
    packed.stats["relax_and_pack_mig_slices"] = sum(n for (_, profile, _, _), n in replicas.items()
                                                    if profile != WHOLE)
    return packed
