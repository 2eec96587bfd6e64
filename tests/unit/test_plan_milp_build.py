"""The MILP's arrays: which columns exist, their bounds, and that their order follows the problem (not a hash)."""

from __future__ import annotations

import numpy as np
import pytest

from vlmopt.plan.milp_build import EPS_GPU, EPS_REPLICA, Milp, build_milp
from vlmopt.plan.milp_model import WHOLE, Demand, Layout, Offer, Problem, ReplicaOption
from vlmopt.plan.spot import SpotTier

pytestmark = pytest.mark.unit


def _problem(variants: tuple[str, ...] = ("v1", "v2"), tier: SpotTier | None = None) -> Problem:
    offers = [Offer("od", "h", "on_demand", 4.0), Offer("sp", "h", "spot", 1.0, haircut=0.1, zone_share=2 / 3)]
    layouts = [Layout("h", (WHOLE,)), Layout("h", ("3g", "3g"), (0, 4)), Layout("h", ("3g",), (0,))]
    options = [ReplicaOption("s", v, "h", slice_name, cap) for v in variants
               for slice_name, cap in ((WHOLE, 2.0), ("3g", 0.9))]
    return Problem(offers, layouts, options, [Demand("s", 2.4, floor_rps=2.0, spot_tier=tier)])


def test_columns_bounds_and_costs() -> None:
    milp = build_milp(_problem(tier=SpotTier(1, 5, 3)))
    assert isinstance(milp, Milp)
    # the 3g-only layout offers no more than 3g+3g: dropped (same GPU, same price)
    assert {(key, layout.slices) for key, layout in milp.gpu_cols} == {
        (o, s) for o in ("od", "sp") for s in ((WHOLE,), ("3g", "3g"))}
    for (key, layout), col in milp.gpu_cols.items():
        price = 4.0 if key == "od" else 1.0
        assert milp.cost[col] == pytest.approx(price + EPS_GPU * (2 if layout.is_mig else 1))
    assert len(milp.replica_cols) == 2 * 2 * 2  # offers x slices x variants
    for (key, _, _, _), col in milp.replica_cols.items():
        assert milp.cost[col] == EPS_REPLICA
        if key == "sp":
            assert milp.col_ub[col] == 5  # the tier's spot replica limit
    matrix = milp.matrix()
    assert matrix.shape == (len(milp.row_lb), len(milp.cost))
    assert np.all(np.array(milp.row_lb) <= np.array(milp.row_ub))


def test_variant_binaries_follow_the_option_order() -> None:
    for variants in (("b", "a"), ("a", "b")):
        milp = build_milp(_problem(variants))
        assert isinstance(milp, Milp)
        binaries = [col for col, ub in enumerate(milp.col_ub) if ub == 1.0 and milp.cost[col] == 0.0]
        assert len(binaries) == 2
        # one row sums them to one; its entries come in the order the options name the variants
        row = next(r for r in range(len(milp.row_lb)) if milp.row_lb[r] == 1.0 and milp.row_ub[r] == 1.0)
        entries = [c for r, c in zip(milp.rows, milp.cols, strict=True) if r == row]
        assert sorted(entries) == sorted(binaries)


def test_a_service_without_options_is_named() -> None:
    problem = _problem()
    problem.demands.append(Demand("lonely", 1.0))
    assert build_milp(problem) == "service 'lonely' has no replica option on any offered GPU"


def test_spot_mig_keeps_slices_off_spot() -> None:
    problem = _problem()
    problem.spot_mig = frozenset()
    milp = build_milp(problem)
    assert isinstance(milp, Milp)
    assert not [key for key in milp.replica_cols if key[0] == "sp" and key[1] != WHOLE]
    assert [key for key in milp.replica_cols if key[0] == "od" and key[1] != WHOLE]
