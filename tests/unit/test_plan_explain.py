"""Explanations: lever attribution adds up, unit costs are right, infeasible workloads name the binding
constraint, and make_plan's output is consistent with itself (node groups, costs, services, candidates)."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan import explain
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.planner import make_plan
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit


def test_levers_switched_on_in_order_add_up_to_the_total_saving() -> None:
    costs = {(): 10.0, ("quantization",): 7.0, ("mig_packing", "quantization"): 6.5,
             ("mig_packing", "quantization", "spot"): 4.0}
    att = explain.attribute_levers(lambda levers: costs[tuple(sorted(levers))])
    assert [lv.name for lv in att.levers] == ["quantization", "mig_packing", "spot"]
    assert [lv.usd_per_hour_saved for lv in att.levers] == pytest.approx([3.0, 0.5, 2.5])
    assert sum(lv.usd_per_hour_saved for lv in att.levers) == pytest.approx(10.0 - 4.0)


def test_lever_attribution_with_infeasible_baseline_and_disallowed_lever() -> None:
    costs = {(): None, ("quantization",): 8.0, ("mig_packing", "quantization"): 6.0}
    att = explain.attribute_levers(lambda levers: costs[tuple(sorted(levers))],
                                   available=("quantization", "mig_packing"))
    assert att.baseline_usd_per_hour is None
    assert [lv.name for lv in att.levers] == ["mig_packing"]
    assert any("makes the workload feasible" in n for n in att.notes)
    assert any(n.startswith("spot: not allowed") for n in att.notes)


def test_cost_summary_units() -> None:
    s = explain.cost_summary(10.0, output_tokens_per_hour=2e6, images_per_hour=5000, expected_usd_per_hour=11.0)
    assert s.usd_per_month == pytest.approx(7300.0)
    assert s.usd_per_million_output_tokens == pytest.approx(5.0)
    assert s.usd_per_thousand_images == pytest.approx(2.0)
    assert s.expected_usd_per_hour == 11.0


@pytest.fixture(scope="module")
def catalogs():
    return load_gpu_catalog(), load_model(PriceCatalog, data_file("prices.yaml"))


def _plan(wl: Workload, catalogs, attribute_levers: bool = True):
    inputs = PlanInputs(workload=wl, gpu_catalog=catalogs[0], price_catalog=catalogs[1])
    return make_plan(inputs, PlanningOptions(attribute_levers=attribute_levers))


def test_plan_is_consistent_and_beats_its_baseline(catalogs) -> None:
    wl = load_model(Workload, data_file("workloads/default.yaml"))
    plan = _plan(wl, catalogs)
    assert sum(g.usd_per_hour for g in plan.node_groups) == pytest.approx(plan.cost.usd_per_hour, rel=1e-6)
    assert plan.baseline is not None and plan.cost.usd_per_hour <= plan.baseline.cost.usd_per_hour + 1e-9
    saved = sum(lv.usd_per_hour_saved for lv in plan.levers)
    assert saved == pytest.approx(plan.baseline.cost.usd_per_hour - plan.cost.usd_per_hour, abs=1e-6)
    svc = plan.services[0]
    assert svc.provided_rps >= svc.required_rps
    assert svc.availability >= plan.availability_target
    assert plan.cost.worst_case_usd_per_hour >= plan.cost.expected_usd_per_hour >= plan.cost.usd_per_hour
    for g in plan.node_groups:
        for r in g.gpu_layout.replicas:
            assert r.capacity_provenance.kind == "estimated"  # no measured profile was given
            a = r.server_args
            assert a.max_model_len == 8192 and a.max_num_seqs and a.max_num_batched_tokens
            assert a.gpu_memory_utilization and a.limit_mm_per_prompt == {"image": 1, "video": 0}
            assert a.quantization in (None, "fp8")
    assert {c.market for c in plan.candidates} == {"on_demand", "spot"}
    assert any(not c.fits for c in plan.candidates) or all(c.fits for c in plan.candidates)
    assert any(p.kind == "catalog" for p in plan.inputs) and any(p.kind == "estimated" for p in plan.inputs)


def test_services_share_a_gpu_through_mig(catalogs) -> None:
    wl = Workload(name="pack", services=[
        {"name": "a", "model": "qwen2.5-vl-3b", "peak_rps": 1, "input_tokens": 64, "output_tokens": 32,
         "max_model_len": 4096, "slo": {"ttft_p95_ms": 2000, "tpot_p95_ms": 80}},
        {"name": "b", "model": "qwen2.5-vl-3b", "peak_rps": 1, "input_tokens": 64, "output_tokens": 32,
         "max_model_len": 4096, "slo": {"ttft_p95_ms": 2000, "tpot_p95_ms": 80}},
    ])
    wl.constraints.gpus = ["h100-sxm-80gb"]
    wl.constraints.markets = ["on_demand"]
    # Packing alone: with on-demand instances that never fail, one GPU cut in slices carries both services. (At the
    # clouds' SLA floor each service must survive losing a GPU: test_no_service_rests_on_one_on_demand_gpu.)
    wl.constraints.on_demand.instance_unavailability = 0.0
    plan = _plan(wl, catalogs)
    assert len(plan.node_groups) == 1
    group = plan.node_groups[0]
    assert group.instances * group.gpus_per_instance == 1 and group.gpu_layout.mig_layout
    assert {r.service for r in group.gpu_layout.replicas} == {"a", "b"}
    mig_lever = next(lv for lv in plan.levers if lv.name == "mig_packing")
    assert mig_lever.usd_per_hour_saved == pytest.approx(6.88)  # two whole H100s -> one, cut in slices
    for r in group.gpu_layout.replicas:
        assert r.mig_start is not None and r.server_args.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"


def test_no_service_rests_on_one_on_demand_gpu(catalogs) -> None:
    # The same two services at the clouds' single-instance SLA floor (an H100 instance down 0.5 % of the time):
    # one GPU for both would be 99.5 % available, below the 0.999 target, so the plan survives losing any one GPU.
    wl = Workload(name="pack", services=[
        {"name": s, "model": "qwen2.5-vl-3b", "peak_rps": 1, "input_tokens": 64, "output_tokens": 32,
         "max_model_len": 4096, "slo": {"ttft_p95_ms": 2000, "tpot_p95_ms": 80}} for s in ("a", "b")])
    wl.constraints.gpus = ["h100-sxm-80gb"]
    wl.constraints.markets = ["on_demand"]
    plan = _plan(wl, catalogs, attribute_levers=False)
    assert sum(g.instances * g.gpus_per_instance for g in plan.node_groups) >= 2
    for s in plan.services:
        assert s.availability >= 0.999
        # whatever one GPU holds of the service, the rest still carries its peak
        per_gpu = [sum(r.capacity_rps for r in g.gpu_layout.replicas if r.service == s.service)
                   for g in plan.node_groups for _ in range(g.instances * g.gpus_per_instance)]
        assert sum(per_gpu) - max(per_gpu) >= 1.0
    assert any("on-demand instance" in line for line in plan.binding_constraints)


def test_optimality_says_proven_or_how_far_from_it() -> None:
    assert explain.optimality({"status": "optimal", "proven_gap": 0.0}) == "proven optimal"
    within = explain.optimality({"status": "optimal", "proven_gap": 0.00091, "pruning": "heuristic: ..."})
    assert within is not None and within.startswith("within 0.09% of optimal over the options kept after pruning")
    assert explain.optimality({"status": "time_limit", "mip_gap": 0.026661}).startswith("within 2.67% of optimal")
    assert "no bound" in explain.optimality({"status": "time_limit"})
    assert explain.optimality({"status": "optimal"}).startswith("optimal (the solver")
    assert explain.optimality({}) is None  # a plan without a solver block says nothing
