"""The planner on a large workload plans in a bounded number of MILP solves, and the availability it promises
holds: the spot tiers (spot.py) are in the MILP, so no re-solve loop chases the target. Not a timing test: the
times are in docs/plan.md (scripts/bench_planner_scaling.py)."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan import planner, solve
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.synthetic import scaling_workload, synthetic_prices
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def gpu_catalog():
    return load_gpu_catalog()


def test_a_large_workload_plans_in_bounded_solves_and_meets_availability(gpu_catalog) -> None:
    # 12 services: above the pruning threshold (8), small enough for a unit test; 50 run in the scaling script.
    wl = scaling_workload(12)
    inputs = PlanInputs(workload=wl, gpu_catalog=gpu_catalog, price_catalog=synthetic_prices(gpu_catalog))
    plan = planner.make_plan(inputs)
    solver = plan.solver
    assert solver["availability_rounds"] <= solve.MAX_AVAILABILITY_ROUNDS
    # the full plan's rounds, plus one round per lever-off step (no spot there, so no tiers): baseline,
    # +quantization, +MIG packing; each round at most one MILP per service, the packing, and a refinement (the
    # loss rounds and one more packing)
    per_round = len(wl.services) + 1 + (solve.MAX_LOSS_SOLVES + 1) + 1
    assert solver["milp_solves"] <= (solve.MAX_AVAILABILITY_ROUNDS + 3) * per_round
    assert "pruning" in solver and "time limit" in solver["lever_attribution"]
    assert len(plan.services) == 12
    for svc in plan.services:
        assert svc.availability >= plan.availability_target, svc.service
        assert svc.provided_rps >= svc.required_rps - 1e-6, svc.service
    assert any(g.market == "spot" for g in plan.node_groups)
    assert isinstance(solver.get("proven_gap"), float) and 0 <= solver["proven_gap"] < 1
    assert sum(g.usd_per_hour for g in plan.node_groups) == pytest.approx(plan.cost.usd_per_hour, rel=1e-6)
    assert plan.baseline is not None and plan.cost.usd_per_hour <= plan.baseline.cost.usd_per_hour


def _l4_service(peak_rps: float) -> PlanInputs:
    wl = Workload(name="many-l4", services=[{
        "name": "a", "model": "qwen2.5-vl-7b", "peak_rps": peak_rps, "input_tokens": 256, "output_tokens": 128,
        "slo": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50}}])
    wl.constraints.gpus = ["l4-24gb"]
    prices = load_model(PriceCatalog, data_file("prices.yaml"))
    return PlanInputs(workload=wl, gpu_catalog=load_gpu_catalog(), price_catalog=prices, availability=0.9999)


def test_a_service_at_its_spot_limit_gets_a_second_round_with_the_next_tier() -> None:
    """At 0.9999 (on-demand instances failing too) the first tier allows 2 instances that can fail, surviving one
    loss; a 1 req/s service fills it with 2 spot L4s, so round 2 tries the next tier (17 instances, surviving two
    losses) and keeps the cheaper plan."""
    plan = planner.make_plan(_l4_service(1.0), PlanningOptions(attribute_levers=False))
    assert plan.solver["availability_rounds"] == 2
    spot_gpus = sum(g.instances * g.gpus_per_instance for g in plan.node_groups if g.market == "spot")
    assert spot_gpus == 2
    assert plan.services[0].availability >= 0.9999
    assert any("any 1 loss(es)" in line for line in plan.binding_constraints)


def test_an_infeasible_first_tier_moves_to_the_next_tier_not_to_a_distant_one() -> None:
    """At 1.5 req/s two instances cannot carry the peak after a loss, so round 1 is infeasible. Round 2 takes the
    next tier (two losses, spot counting): a mostly-spot plan, not the on-demand tier that survives eight losses."""
    plan = planner.make_plan(_l4_service(1.5), PlanningOptions(attribute_levers=False))
    assert plan.solver["availability_rounds"] == 2
    spot_gpus = sum(g.instances * g.gpus_per_instance for g in plan.node_groups if g.market == "spot")
    on_demand_gpus = sum(g.instances * g.gpus_per_instance for g in plan.node_groups if g.market == "on_demand")
    assert spot_gpus >= 2 and on_demand_gpus <= 2, plan.node_groups
    assert plan.services[0].availability >= 0.9999
    assert any("any 2 loss(es)" in line for line in plan.binding_constraints)
