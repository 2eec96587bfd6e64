"""Solving one set of levers: availability rounds, the spot tiers, the availability each service gets."""

from __future__ import annotations

import pytest

from vlmopt.plan.planner import ALL_LEVERS
from vlmopt.plan.solve import (
    MAX_AVAILABILITY_ROUNDS,
    service_availability,
    solve_levers,
    spot_replicas,
    spot_tiers,
    worst_replica_down_probability,
)

from .plan_context_fixtures import small_context

pytestmark = pytest.mark.unit


def test_all_levers_meet_the_availability_target_in_bounded_rounds() -> None:
    ctx = small_context()
    solved = solve_levers(ctx, ALL_LEVERS)
    assert solved is not None and solved.solution.ok
    assert 1 <= solved.rounds <= MAX_AVAILABILITY_ROUNDS
    assert set(solved.availability) == {"captions", "chat"}
    assert all(a >= ctx.availability_target for a in solved.availability.values())
    assert service_availability(ctx, solved.problem, solved.solution) == solved.availability
    on_spot = spot_replicas(solved.solution, solved.problem)
    for svc, count in on_spot.items():
        tier = solved.tiers[svc]
        assert tier.max_spot_replicas is None or count <= tier.max_spot_replicas


def test_without_spot_there_are_no_tiers_and_one_round() -> None:
    ctx = small_context()
    solved = solve_levers(ctx, frozenset({"quantization", "mig_packing"}))
    assert solved is not None and solved.rounds == 1 and solved.tiers == {}
    assert not spot_replicas(solved.solution, solved.problem)
    assert all(a == 1.0 for a in solved.availability.values())  # on-demand is assumed always up


def test_spot_tiers_grow_looser_with_more_spot_allowed() -> None:
    ctx = small_context()
    tiers = spot_tiers(ctx)
    assert tiers and tiers[-1].events is None  # the last tier: on-demand carries the peak alone
    limits = [t.max_spot_replicas for t in tiers if t.events]
    assert limits == sorted(limits)
    assert 0 < worst_replica_down_probability(ctx) < 1
