"""From a solved MILP to the Plan's parts: node groups agree with the solution, MIG layouts come in a creation
order the hardware model accepts, costs and candidates are consistent."""

from __future__ import annotations

import pytest

from vlmopt.hw import mig
from vlmopt.plan import assemble
from vlmopt.plan.milp_model import WHOLE
from vlmopt.plan.planner import ALL_LEVERS
from vlmopt.plan.solve import solve_levers

from .plan_context_fixtures import small_context

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def solved():
    found = solve_levers(small_context(), ALL_LEVERS)
    assert found is not None
    return found


def test_node_groups_cost_what_the_solution_costs(solved) -> None:
    ctx = small_context()
    groups = assemble.node_groups(ctx, solved)
    assert sum(g.usd_per_hour for g in groups) == pytest.approx(solved.solution.usd_per_hour, rel=1e-6)
    per_service: dict[str, int] = {}
    for g in groups:
        for r in g.gpu_layout.replicas:
            per_service[r.service] = per_service.get(r.service, 0) + g.instances * g.gpus_per_instance
    wanted: dict[str, int] = {}
    for (_, _, svc, _), n in solved.solution.replicas.items():
        wanted[svc] = wanted.get(svc, 0) + n
    assert per_service == wanted
    names = [g.name for g in groups]
    assert len(names) == len(set(names))


def test_mig_groups_list_instances_in_a_working_creation_order(solved) -> None:
    ctx = small_context()
    for g in assemble.node_groups(ctx, solved):
        layout = g.gpu_layout
        if not layout.mig_layout:
            assert all(r.slice == WHOLE and r.mig_start is None for r in layout.replicas)
            continue
        checked = mig.validate_layout(ctx.gpus[g.gpu], layout.mig_layout, layout.mig_placements)
        assert [name for name, _ in checked.creation_order()] == layout.mig_layout
        assert [(r.slice, r.mig_start) for r in layout.replicas] == list(zip(layout.mig_layout,
                                                                             layout.mig_placements, strict=True))


def test_costs_and_candidates(solved) -> None:
    ctx = small_context()
    cost = assemble.costs(ctx, assemble.node_groups(ctx, solved))
    assert cost.worst_case_usd_per_hour >= cost.expected_usd_per_hour >= cost.usd_per_hour > 0
    candidates = assemble.candidates(ctx)
    markets = {(o.offer.gpu, o.offer.market) for o in ctx.offers}
    per_gpu = {g: sum(1 for gg, _ in markets if gg == g) for g, _ in markets}
    assert len(candidates) == sum(per_gpu[e.gpu] for e in ctx.evals)
    assert all(c.usd_per_hour_per_replica > 0 for c in candidates)
    plans = assemble.service_plans(ctx, solved, assemble.node_groups(ctx, solved), candidates)
    assert [p.service for p in plans] == ["captions", "chat"]
    assert all(p.provided_rps >= p.required_rps - 1e-6 and p.variant in p.why for p in plans)
    lines = assemble.binding_constraints(ctx, solved)
    assert any("replica capacity is limited by" in line for line in lines)
