"""The optimizer's Problem for a set of levers, and the pruning heuristic of large workloads."""

from __future__ import annotations

import pytest

from vlmopt.plan import problem as problem_module
from vlmopt.plan.milp_model import WHOLE, ReplicaOption
from vlmopt.plan.planner import ALL_LEVERS
from vlmopt.plan.problem import cheapest_by_size, is_large, problem_for

from .plan_context_fixtures import small_context

pytestmark = pytest.mark.unit


def test_levers_decide_offers_layouts_and_variants() -> None:
    ctx = small_context()
    full = problem_for(ctx, ALL_LEVERS, {})
    assert {o.market for o in full.offers} == {"on_demand", "spot"}
    assert any(lay.is_mig for lay in full.layouts) and any(o.slice != WHOLE for o in full.options)
    assert {o.variant for o in full.options} > {"bf16"}
    baseline = problem_for(ctx, frozenset(), {})
    assert {o.market for o in baseline.offers} == {"on_demand"}
    assert not any(lay.is_mig for lay in baseline.layouts)
    assert {(o.variant, o.slice) for o in baseline.options} == {("bf16", WHOLE)}
    assert [d.service for d in full.demands] == ["captions", "chat"]
    chat = full.demands[1]
    assert chat.required_rps == pytest.approx(3 * 1.2) and chat.floor_rps == pytest.approx(3)
    assert full.mip_rel_gap == 1e-6  # small workloads are solved exactly
    assert problem_for(ctx, ALL_LEVERS, {}, time_limit_s=0.5).time_limit_s == 0.5


def test_large_workloads_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = small_context()
    everything = problem_for(ctx, ALL_LEVERS, {})
    monkeypatch.setattr(problem_module, "PRUNE_ABOVE_SERVICES", 1)
    assert is_large(ctx)
    pruned = problem_for(ctx, ALL_LEVERS, {})
    assert 0 < len(pruned.options) < len(everything.options)
    assert set(pruned.options) <= set(everything.options)
    assert {o.service for o in pruned.options} == {"captions", "chat"}
    assert pruned.mip_rel_gap == problem_module.LARGE_MIP_REL_GAP
    assert everything.spot_mig is None and pruned.spot_mig == frozenset()  # whole GPUs only on spot


def test_cheapest_by_size_stops_at_the_first_option_big_enough() -> None:
    options = [ReplicaOption("s", "v", g, WHOLE, cap) for g, cap in (("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 9.0))]
    price = {"a": 1.0, "b": 2.0, "c": 2.5, "d": 4.0}
    kept = cheapest_by_size(options, lambda o: price[o.gpu], required_rps=2.5)
    assert [o.gpu for o in kept] == ["a", "b"]  # c is dearer and smaller than b; b already carries 2.5
