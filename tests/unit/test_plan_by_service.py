"""Relax and pack (vlmopt/plan/by_service.py): the per-service relaxation is a true lower bound, the packed plan is a
real plan of the whole problem, and solve_problem returns the optimum or records how far from it it may be."""

from __future__ import annotations

import math
import random

import pytest

from tests.unit.test_plan_optimizer import random_problem
from vlmopt.plan.by_service import relax_and_pack, slice_price_shares
from vlmopt.plan.milp_model import WHOLE, Demand, Layout, Offer, Problem, ReplicaOption
from vlmopt.plan.optimizer import solve
from vlmopt.plan.solve import solve_problem

pytestmark = pytest.mark.unit

H100_LAYOUTS = [
    Layout("h", (WHOLE,)),
    Layout("h", ("3g.40gb", "3g.40gb"), (0, 4)),
    Layout("h", ("4g.40gb", "3g.40gb"), (0, 4)),
    Layout("h", ("1g.10gb",) * 7, tuple(range(7))),
]


def test_slice_shares_never_add_up_to_more_than_the_gpu() -> None:
    # H100 geometry: 7 compute, 8 memory slices; the catalog's memory shares are used as they are
    resources = {("h", "1g.10gb"): (1 / 7, 1 / 8), ("h", "1g.20gb"): (1 / 7, 2 / 8), ("h", "3g.40gb"): (3 / 7, 4 / 8),
                 ("h", "4g.40gb"): (4 / 7, 4 / 8)}
    layouts = [*H100_LAYOUTS, Layout("h", ("1g.20gb",) * 4, (0, 2, 4, 6))]
    shares = slice_price_shares(Problem([], layouts, [], [], mig_slice_resources=resources))
    assert shares[("h", "1g.20gb")] == pytest.approx(1 / 4)  # four fit: a quarter, not the 1/7 of its compute
    assert shares[("h", "3g.40gb")] == pytest.approx(1 / 2) and shares[("h", "1g.10gb")] == pytest.approx(1 / 8)
    for layout in layouts:
        if layout.is_mig:
            assert sum(shares[("h", p)] for p in layout.slices) <= 1 + 1e-12
    # without the catalog's counts: compute slices from the names over the most a layout holds (7)
    named = slice_price_shares(Problem([], H100_LAYOUTS, [], []))
    assert named[("h", "3g.40gb")] == pytest.approx(3 / 7) and named[("h", "1g.10gb")] == pytest.approx(1 / 7)
    # names without a count: one share per slice, over the most slices a layout holds
    odd = slice_price_shares(Problem([], [Layout("m", ("a", "a")), Layout("m", ("b", "a", "a"))], [], []))
    assert odd == {("m", "a"): pytest.approx(1 / 3), ("m", "b"): pytest.approx(1 / 3)}


def test_two_services_sharing_one_mig_gpu_get_a_lower_bound_then_the_optimum() -> None:
    """Each service needs one 3g slice: the relaxation charges 2 x 3/7 of a GPU, packing puts both on one GPU."""
    offers = [Offer("od", "h", "on_demand", 7.0)]
    options = [ReplicaOption(s, "v", "h", slice_name, cap)
               for s in ("s1", "s2") for slice_name, cap in ((WHOLE, 2.0), ("3g.40gb", 1.0))]
    problem = Problem(offers, H100_LAYOUTS, options, [Demand("s1", 0.9), Demand("s2", 0.9)])
    split = relax_and_pack(problem)
    assert split.lower_bound == pytest.approx(6.0, abs=1e-4)
    assert split.solution is not None and split.solution.usd_per_hour == pytest.approx(7.0)
    assert split.gap == pytest.approx(1 / 7, abs=1e-4)
    # too far from the bound: the whole problem decides, proves the one-GPU plan optimal, and the gap closes
    solution, solves = solve_problem(problem)
    assert solution.usd_per_hour == pytest.approx(7.0) and solution.proven_gap == pytest.approx(0.0, abs=1e-6)
    assert solves == 4  # two services, the packing, the whole problem


def test_without_mig_the_bound_meets_the_plan() -> None:
    offers = [Offer("a-od", "a", "on_demand", 1.0), Offer("b-od", "b", "on_demand", 1.7)]
    layouts = [Layout("a", (WHOLE,)), Layout("b", (WHOLE,))]
    options = [ReplicaOption(s, "v", g, WHOLE, cap) for s in ("s1", "s2", "s3") for g, cap in (("a", 1.0), ("b", 2.0))]
    problem = Problem(offers, layouts, options, [Demand("s1", 2.5), Demand("s2", 0.5), Demand("s3", 3.9)])
    solution, solves = solve_problem(problem)
    assert solves == 4 and solution.stats["method"] == "relax and pack"
    assert solution.usd_per_hour == pytest.approx(solve(problem).usd_per_hour)
    assert solution.proven_gap == pytest.approx(0.0, abs=1e-6)


def test_one_service_without_a_plan_makes_the_problem_infeasible() -> None:
    offers = [Offer("a-od", "a", "on_demand", 1.0)]
    problem = Problem(offers, [Layout("a", (WHOLE,))], [ReplicaOption("s1", "v", "a", WHOLE, 1.0)],
                      [Demand("s1", 1.0), Demand("s2", 1.0)])
    solution, _ = solve_problem(problem)
    assert solution.status == "infeasible" and "s2" in solution.message


@pytest.mark.parametrize("seed", range(40))
def test_relaxation_bounds_the_optimum_and_the_plan_is_real(seed: int) -> None:
    """Against the whole problem solved exactly: the per-service bound is never above the optimum, the packed plan
    never below it, and solve_problem's plan is the optimum or within the gap it records."""
    problem = random_problem(random.Random(seed))
    exact = solve(problem)
    split = relax_and_pack(problem)
    if split.infeasible is not None:
        assert exact.status == "infeasible", seed
        return
    if not exact.has_plan:
        assert split.solution is None, seed
        return
    assert split.lower_bound <= exact.objective + 1e-6, seed
    if split.solution is not None:
        assert split.solution.objective >= exact.objective - 1e-6, seed
        assert exact.objective >= split.solution.objective * (1 - split.gap) - 1e-6, seed
    solution, _ = solve_problem(problem)
    assert solution.usd_per_hour >= exact.usd_per_hour - 1e-6, seed
    gap = solution.proven_gap or 0.0
    assert exact.objective >= solution.objective * (1 - gap) - 1e-6, seed


def test_random_instances_take_both_paths() -> None:
    """Guards the generator above: some instances are proved by relax and pack alone, some need the whole problem
    (slices of two services share a GPU, or a shared quota)."""
    proved = fell_back = 0
    for seed in range(40):
        problem = random_problem(random.Random(seed))
        split = relax_and_pack(problem)
        if split.infeasible is not None or (split.solution is None and not math.isfinite(split.lower_bound)):
            continue
        if split.gap <= problem.mip_rel_gap:
            proved += 1
        else:
            fell_back += 1
    assert proved >= 5 and fell_back >= 3, (proved, fell_back)
