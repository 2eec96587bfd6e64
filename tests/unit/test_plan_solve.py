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
    worst_on_demand_down_probability,
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


def test_without_spot_on_demand_instances_fail_at_the_sla_floor() -> None:
    # Without spot, every service gets an on-demand tier: its on-demand capacity survives the loss of k instances,
    # each down 0.5 % of the time (AWS's single-instance SLA floor), so no service rests on one instance.
    ctx = small_context()
    assert worst_on_demand_down_probability(ctx) == pytest.approx(0.005)
    solved = solve_levers(ctx, frozenset({"quantization", "mig_packing"}))
    assert solved is not None and solved.rounds <= MAX_AVAILABILITY_ROUNDS
    assert not spot_replicas(solved.solution, solved.problem)
    assert all(t.on_demand_fails and not t.spot_counts and t.events >= 1 for t in solved.tiers.values())
    assert all(ctx.availability_target <= a < 1.0 for a in solved.availability.values())


def test_without_on_demand_failures_or_spot_there_are_no_tiers() -> None:
    ctx = small_context(on_demand_unavailability=0.0)
    assert spot_tiers(ctx, spot_allowed=False) == []
    solved = solve_levers(ctx, frozenset({"quantization", "mig_packing"}))
    assert solved is not None and solved.rounds == 1 and solved.tiers == {}
    assert all(a == 1.0 for a in solved.availability.values())  # on-demand is then assumed always up


def test_tiers_grow_looser_with_more_instances_allowed() -> None:
    ctx = small_context()
    tiers = spot_tiers(ctx)
    spot_part = [t for t in tiers if t.spot_counts]
    on_demand_part = [t for t in tiers if not t.spot_counts]
    assert tiers == spot_part + on_demand_part  # spot tiers first, then on-demand carrying the peak alone
    for part in (spot_part, on_demand_part):
        limits = [t.max_spot_replicas for t in part]
        assert limits == sorted(limits) and [t.events for t in part] == sorted(t.events for t in part)
    assert on_demand_part[-1].max_spot_replicas >= 4096  # the last tier holds any fleet
    assert 0 < worst_replica_down_probability(ctx) < 1
