"""Explanations: what a plan costs in the units people budget in, why each service got its variant, what each
cost lever saved, and -- when nothing works -- which constraint binds, in plain words.

Lever attribution (documented in docs/cost-model.md): start from the baseline (bf16 only, whole GPUs, on-demand
only), then switch the levers on one at a time in the fixed order quantization -> MIG packing -> spot, re-solving
after each; a lever's saving is the drop in optimal $/h it causes given the levers before it. The savings add up
to baseline - plan. The order matters (a lever switched on first takes the credit that two levers share): it
follows how invasive each lever is to adopt, cheapest first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vlmopt.schemas.plan import Candidate, CostSummary, Lever

HOURS_PER_MONTH = 730.0  # 8760 h / 12, the convention cloud price pages use

LEVER_ORDER: tuple[str, ...] = ("quantization", "mig_packing", "spot")
LEVER_TEXT = {
    "quantization": "quantized variants (fp8 / int8 / 4-bit) instead of bf16 only",
    "mig_packing": "MIG slices (several replicas, possibly of several services, per GPU) instead of whole GPUs",
    "spot": "spot capacity above an on-demand floor instead of on-demand only",
}


@dataclass(frozen=True)
class LeverStep:
    lever: str
    enabled: frozenset[str]
    usd_per_hour: float | None  # None: infeasible with only these levers


@dataclass(frozen=True)
class LeverAttribution:
    baseline_usd_per_hour: float | None
    steps: tuple[LeverStep, ...]
    levers: tuple[Lever, ...]
    notes: tuple[str, ...]


def attribute_levers(
    cost_with: Callable[[frozenset[str]], float | None],
    available: Iterable[str] = LEVER_ORDER,
    order: Sequence[str] = LEVER_ORDER,
) -> LeverAttribution:
    """Re-solve with levers switched on cumulatively in `order`; `cost_with(levers)` returns optimal $/h or None.

    A lever the workload does not allow (e.g. markets: [on_demand]) is skipped with a note. When a step is
    infeasible (bf16 fits no whole GPU, say), the saving of the lever that first makes it feasible cannot be
    priced and is reported as a note rather than a number.
    """
    allowed = set(available)
    enabled: frozenset[str] = frozenset()
    baseline = cost_with(enabled)
    previous = baseline
    steps = [LeverStep("baseline", enabled, baseline)]
    levers: list[Lever] = []
    notes: list[str] = []
    if baseline is None:
        notes.append("the baseline (bf16, whole GPUs, on-demand) cannot serve this workload at its SLO")
    for name in order:
        if name not in allowed:
            notes.append(f"{name}: not allowed by the workload, not used")
            continue
        enabled = enabled | {name}
        cost = cost_with(enabled)
        steps.append(LeverStep(name, enabled, cost))
        if cost is None:
            notes.append(f"{name}: still infeasible with {', '.join(sorted(enabled))}")
        elif previous is None:
            notes.append(f"{name}: makes the workload feasible at ${cost:.2f}/h (nothing to compare against)")
        else:
            saved = previous - cost
            levers.append(
                Lever(
                    name=name,  # type: ignore[arg-type]
                    usd_per_hour_saved=round(saved, 6),
                    explanation=f"{LEVER_TEXT[name]}: ${previous:.2f}/h -> ${cost:.2f}/h",
                )
            )
        if cost is not None:
            previous = cost
    return LeverAttribution(baseline, tuple(steps), tuple(levers), tuple(notes))


def cost_summary(
    usd_per_hour: float,
    output_tokens_per_hour: float,
    images_per_hour: float,
    expected_usd_per_hour: float | None = None,
    worst_case_usd_per_hour: float | None = None,
) -> CostSummary:
    """Unit costs at the workload's mean load (tokens and images actually served, not capacity)."""
    per_million = usd_per_hour / (output_tokens_per_hour / 1e6) if output_tokens_per_hour > 0 else None
    per_thousand_images = usd_per_hour / (images_per_hour / 1e3) if images_per_hour > 0 else None
    return CostSummary(
        usd_per_hour=round(usd_per_hour, 6),
        usd_per_month=round(usd_per_hour * HOURS_PER_MONTH, 2),
        usd_per_million_output_tokens=None if per_million is None else round(per_million, 6),
        usd_per_thousand_images=None if per_thousand_images is None else round(per_thousand_images, 6),
        expected_usd_per_hour=None if expected_usd_per_hour is None else round(expected_usd_per_hour, 6),
        worst_case_usd_per_hour=None if worst_case_usd_per_hour is None else round(worst_case_usd_per_hour, 6),
    )


def _usd_per_rps(c: Candidate) -> float:
    if not (c.fits and c.meets_slo) or c.usd_per_hour_per_replica is None or c.capacity_rps <= 0:
        return math.inf
    return c.usd_per_hour_per_replica / c.capacity_rps


def why_variant(
    service: str,
    chosen: str,
    candidates: Sequence[Candidate],
    quality_note: str,
    excluded: dict[str, str] | None = None,
    deployed: str = "",
) -> str:
    """One sentence per service: what the optimizer picked (the cheapest whole plan, GPUs bought whole), each
    variant's best $/h per req/s at the SLO (GPU price x the slice's share, before packing), the quality check."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.service != service:
            continue
        if c.variant not in best or _usd_per_rps(c) < _usd_per_rps(best[c.variant]):
            best[c.variant] = c
    head = f"{chosen}: part of the cheapest plan that meets the SLO"
    parts = [head + (f" ({deployed})" if deployed else "")]
    ranked = []
    for variant, cand in sorted(best.items()):
        cost = _usd_per_rps(cand)
        if math.isfinite(cost):
            ranked.append(f"{variant} ${cost:.3f} ({cand.gpu} {cand.slice} {cand.market.replace('_', '-')}, "
                          f"{cand.provenance.kind})")
        else:
            reasons = sorted({c.reason for c in candidates if c.service == service and c.variant == variant})
            ranked.append(f"{variant} never meets it ({reasons[0] if reasons else 'no option'})")
    if ranked:
        parts.append("best $/h per req/s of a slice by variant: " + ", ".join(ranked))
    for variant, reason in sorted((excluded or {}).items()):
        parts.append(f"{variant} excluded: {reason}")
    parts.append(quality_note)
    return "; ".join(p for p in parts if p)


# A plan within this fraction of its proven lower bound is called optimal: HiGHS's default tolerance, far below any
# price difference a user could act on.
PROVEN_OPTIMAL_GAP = 1e-6


def optimality(solver: Mapping[str, object]) -> str | None:
    """How close to the cheapest plan this one is proven to be, from plan.solver (None: the block says nothing)."""
    gap = solver.get("proven_gap", solver.get("mip_gap"))
    pruned = " over the options kept after pruning" if solver.get("pruning") else ""
    if isinstance(gap, int | float) and math.isfinite(gap):
        if gap <= PROVEN_OPTIMAL_GAP:
            return f"proven optimal{pruned}"
        return f"within {gap:.2%} of optimal{pruned} (the solver's proven bound; status {solver.get('status')})"
    if solver.get("status") == "optimal":
        return "optimal (the solver's status; no gap recorded)"
    if solver.get("status"):
        return f"not proven optimal: status {solver.get('status')}, no bound on the gap"
    return None
