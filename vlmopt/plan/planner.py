"""`make_plan`: validated PlanInputs -> Plan, in three steps with one module each:

- context.py: the planning context (services, offers, layouts, fitted efficiency, every replica option evaluated);
- solve.py (with problem.py and optimizer.py): the MILP per set of levers, availability rounds included;
- assemble.py (with explain.py): node groups, costs, candidates, explanations.

infeasibility.py names the binding constraint when nothing fits. No file I/O: inputs.py loads the inputs, and
vlmopt/plan_outputs.py writes the plan, its deploy bundle and its report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vlmopt.hw.models import ModelArch, load_model_arch
from vlmopt.schemas.common import utc_now_iso
from vlmopt.schemas.plan import Baseline, Plan, RobustPlanning

from . import assemble, explain
from .context import Context, build_context
from .errors import PlanInfeasible
from .infeasibility import diagnose, explain_milp_failure
from .inputs import PlanInputs, PlanningOptions
from .problem import (
    LARGE_MIP_REL_GAP,
    LARGE_TIME_LIMIT_S,
    PRUNE_ABOVE_SERVICES,
    PRUNE_KEEP_PER_VARIANT,
    PRUNE_VARIANT_SLACK,
    is_large,
)
from .solve import MAX_AVAILABILITY_ROUNDS, Solved, solve_levers

__all__ = ["ALL_LEVERS", "MAX_AVAILABILITY_ROUNDS", "make_plan"]

ALL_LEVERS = frozenset(explain.LEVER_ORDER)
# Large workloads: each lever-off re-solve of the attribution gets this time limit (a safety net as above).
ATTRIBUTION_TIME_LIMIT_S = 300.0


def allowed_levers(ctx: Context) -> frozenset[str]:
    """The levers this workload may pull: spot needs the spot market (and cloud mode), MIG needs allow_mig,
    quantization a non-bf16 variant."""
    allowed = set(ALL_LEVERS)
    if "spot" not in ctx.workload.constraints.markets or ctx.mode == "fleet":
        allowed.discard("spot")
    if not ctx.workload.constraints.allow_mig:
        allowed.discard("mig_packing")
    if not any(v.scheme != "BF16" for sc in ctx.services for v in sc.variants):
        allowed.discard("quantization")
    return frozenset(allowed)


def make_plan(
    inputs: PlanInputs,
    planning: PlanningOptions | None = None,
    arch_loader: Callable[[str], ModelArch] = load_model_arch,
) -> Plan:
    """Plan the cheapest deployment of `inputs.workload`; raises PlanInputError or PlanInfeasible (both name the
    cause). `planning` says how to plan (PlanningOptions; every step reads it as `ctx.options`)."""
    ctx = build_context(inputs, planning or PlanningOptions(), arch_loader)
    diagnose(ctx)
    full = allowed_levers(ctx)
    solved = solve_levers(ctx, full)
    if solved is None:
        raise PlanInfeasible(explain_milp_failure(ctx, full))

    cache: dict[frozenset[str], Solved | None] = {full: solved}
    # Large workloads: each lever-off re-solve gets a short time limit (its best plan is then an upper bound of
    # that step's optimum, and the solver stats say so); small ones are solved exactly.
    attribution_limit = ATTRIBUTION_TIME_LIMIT_S if is_large(ctx) else None

    def cost_with(levers: frozenset[str]) -> float | None:
        key = levers & full
        if key not in cache:
            cache[key] = solve_levers(ctx, key, time_limit_s=attribution_limit)
        found = cache[key]
        return found.solution.usd_per_hour if found else None

    attribution = explain.attribute_levers(cost_with, set(full)) if ctx.options.attribute_levers else None
    groups = assemble.node_groups(ctx, solved)
    candidates = assemble.candidates(ctx)
    baseline = None
    if attribution is not None and attribution.baseline_usd_per_hour is not None:
        base = cache[frozenset()]
        assert base is not None
        base_groups = assemble.node_groups(ctx, base)
        baseline = Baseline(cost=assemble.costs(ctx, base_groups), node_groups=base_groups)
    robust = _robust_summary(ctx, full, solved, groups) if ctx.options.robust else None
    return Plan(
        name=inputs.plan_name,
        mode=inputs.mode,
        created=utc_now_iso(),
        workload=inputs.source,
        services=assemble.service_plans(ctx, solved, groups, candidates),
        node_groups=groups,
        cost=assemble.costs(ctx, groups),
        baseline=baseline,
        levers=list(attribution.levers) if attribution else [],
        binding_constraints=assemble.binding_constraints(ctx, solved),
        candidates=candidates,
        inputs=ctx.provenance,
        solver=_solver_stats(ctx, solved, cache, full, attribution is not None, attribution_limit),
        availability_target=ctx.availability_target,
        notes=_notes(ctx, attribution),
        robust=robust,
    )


def _robust_summary(ctx: Context, levers: frozenset[str], solved: Solved, groups: list) -> RobustPlanning:
    """The nominal plan (central capacities) beside the robust one, solved with the same levers."""
    nominal_ctx = replace(ctx, options=replace(ctx.options, robust=False))
    nominal = solve_levers(nominal_ctx, levers)
    if nominal is None:  # a robust plan exists, so the nominal one does too; kept for the type checker
        raise PlanInfeasible("the nominal plan has no solution although the robust one has")
    nominal_groups = assemble.node_groups(nominal_ctx, nominal)
    replicas: dict[str, int] = {}
    for g in nominal_groups:
        for r in g.gpu_layout.replicas:
            replicas[r.service] = replicas.get(r.service, 0) + g.instances * g.gpus_per_instance
    robust_usd = solved.solution.usd_per_hour
    return RobustPlanning(
        usd_per_hour=round(robust_usd, 6),
        nominal_usd_per_hour=round(nominal.solution.usd_per_hour, 6),
        extra_usd_per_hour=round(robust_usd - nominal.solution.usd_per_hour, 6),
        nominal_gpus=sum(g.instances * g.gpus_per_instance for g in nominal_groups),
        robust_gpus=sum(g.instances * g.gpus_per_instance for g in groups),
        nominal_replicas=dict(sorted(replicas.items())),
        nominal_variants=dict(sorted(nominal.solution.variant_of.items())),
    )


def _notes(ctx: Context, attribution: explain.LeverAttribution | None) -> list[str]:
    notes = list(ctx.notes) + (list(attribution.notes) if attribution else [])
    if any(e.capacity.provenance.kind == "estimated" for e in ctx.evals if e.usable):
        notes.append("capacities marked 'estimated' come from the roofline model, not from a benchmark: run "
                     "`vlmopt benchmark` on the chosen GPU/slice to replace them with measurements")
    if any(v.quantization_flag or v.checkpoint.startswith("variants/") for sc in ctx.services for v in sc.variants):
        notes.append("variants without a manifest point at the bf16 checkpoint (fp8: quantized online by vLLM) or at "
                     "variants/<model>/<variant> folders that `vlmopt quantize` writes")
    return notes


def _solver_stats(
    ctx: Context, solved: Solved, cache: dict[frozenset[str], Solved | None], full: frozenset[str],
    attributed: bool, attribution_limit: float | None,
) -> dict[str, float | int | str]:
    """plan.solver: what solved the plan, how far from optimal it can be, and what was traded for speed."""
    solver = dict(solved.solution.stats)
    solver["status"] = solved.solution.status
    solver["availability_rounds"] = solved.rounds
    solver["milp_solves"] = sum(found.solves if found else 1 for found in cache.values())
    if is_large(ctx):
        solver["pruning"] = (f"heuristic: >{PRUNE_ABOVE_SERVICES} services, kept the variants within "
                             f"{PRUNE_VARIANT_SLACK:.0%} of each service's best $/h per req/s, the "
                             f"{PRUNE_KEEP_PER_VARIANT} most cost-efficient options per service, variant and market "
                             f"(whole GPUs and MIG slices apart), the cheapest big enough, and on spot the "
                             f"{PRUNE_KEEP_PER_VARIANT} best per req/s left after the spot tier's losses; whole GPUs "
                             f"only on spot; a plan within {LARGE_MIP_REL_GAP:.1%} of its lower bound is accepted "
                             f"(solves stop after {LARGE_TIME_LIMIT_S:g} s)")
    if attributed:
        limited = sorted(",".join(sorted(k)) or "baseline" for k, found in cache.items()
                         if found is not None and k != full and found.solution.status != "optimal")
        how = (f"each lever step re-solved to a {LARGE_MIP_REL_GAP:.1%} gap (time limit {attribution_limit:g} s)"
               if attribution_limit else "each lever step re-solved to optimality")
        if limited:
            how += f"; not proven optimal: [{'; '.join(limited)}] (their costs are the best plans found, upper bounds)"
        solver["lever_attribution"] = how
    solver["layouts"] = len(ctx.layouts)
    solver["offers"] = len(ctx.offers)
    solver["optimality"] = explain.optimality(solver) or "unknown"
    return solver
