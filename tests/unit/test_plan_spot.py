"""Spot availability model: closed forms on small cases, and the chosen mix really meets its target."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from vlmopt.plan import spot
from vlmopt.schemas.workload import SpotAssumptions

pytestmark = pytest.mark.unit


def test_unavailable_fraction_is_the_alternating_renewal_down_share() -> None:
    assert spot.unavailable_fraction(0.0, 1.0) == 0.0
    # up for 1/rate = 10 h on average, down 0.5 h: down share 0.5 / 10.5
    assert spot.unavailable_fraction(0.1, 0.5) == pytest.approx(0.5 / 10.5)
    with pytest.raises(ValueError):
        spot.unavailable_fraction(-1, 1)


def test_on_demand_alone_is_always_available() -> None:
    assert spot.availability(10.0, [], 5.0, SpotAssumptions()) == 1.0
    assert spot.availability(4.0, [], 5.0, SpotAssumptions()) == 0.0


def test_single_spot_replica_in_one_zone_matches_the_closed_form() -> None:
    a = SpotAssumptions(interruption_rate_per_hour=0.1, recovery_hours=0.5, zone_loss_rate_per_hour=0.01,
                        zone_recovery_hours=1.0, zones=1)
    p_rep = spot.replica_unavailability(a)
    p_zone = spot.zone_unavailability(a)
    assert spot.availability(0.0, [1.0], 1.0, a) == pytest.approx((1 - p_rep) * (1 - p_zone))


def test_two_of_three_spot_replicas_needed_binomial() -> None:
    a = SpotAssumptions(interruption_rate_per_hour=0.2, recovery_hours=0.5, zone_loss_rate_per_hour=0.0, zones=1)
    p = spot.replica_unavailability(a)
    expected = (1 - p) ** 3 + 3 * p * (1 - p) ** 2
    assert spot.availability(0.0, [1.0, 1.0, 1.0], 2.0, a) == pytest.approx(expected)


def test_zone_loss_is_survived_only_with_enough_left_elsewhere() -> None:
    a = SpotAssumptions(interruption_rate_per_hour=0.0, zone_loss_rate_per_hour=0.01, zone_recovery_hours=1.0,
                        zones=2)
    p_zone = spot.zone_unavailability(a)
    # two replicas in two zones, demand one replica: down only when both zones are down
    assert spot.availability(0.0, [1.0, 1.0], 1.0, a) == pytest.approx(1 - p_zone**2)
    # demand two replicas: any zone loss breaks it
    assert spot.availability(0.0, [1.0, 1.0], 2.0, a) == pytest.approx((1 - p_zone) ** 2)


def test_spread_over_zones_balances_capacity() -> None:
    zones = spot.spread_over_zones([5, 1, 1, 1, 1, 1], 2)
    assert sorted(len(z) for z in zones) == [3, 3]
    assert spot.zone_survival_share(3) == pytest.approx(2 / 3)
    assert spot.zone_survival_share(1) == 0.0


def test_choose_spot_mix_meets_target_and_beats_on_demand_only() -> None:
    a = SpotAssumptions(zones=3)
    mix = spot.choose_spot_mix(demand_rps=4.0, replica_rps=1.0, on_demand_usd_per_replica=3.0,
                               spot_usd_per_replica=1.0, target=0.999, assumptions=a, max_replicas=10)
    assert mix is not None
    assert mix.availability >= 0.999
    assert mix.usd_per_hour < 4 * 3.0
    assert mix.spot_replicas > 4 - mix.on_demand_replicas  # over-provisioned
    # and it is the cheapest: one spot replica fewer breaks the target
    fewer = spot.availability(mix.on_demand_replicas * 1.0, [1.0] * (mix.spot_replicas - 1), 4.0, a)
    assert fewer < 0.999


def test_spot_cost_expected_between_priced_and_worst_case() -> None:
    a = SpotAssumptions()
    c = spot.spot_cost(on_demand_usd=3.0, spot_usd=2.0, spot_fallback_usd=6.0, assumptions=a)
    assert c.usd_per_hour == pytest.approx(5.0)
    assert c.worst_case_usd_per_hour == pytest.approx(9.0)
    assert c.usd_per_hour < c.expected_usd_per_hour < c.worst_case_usd_per_hour


def test_prob_at_most_events_matches_enumeration() -> None:
    zones, p_zone, n, p_inst = 3, 0.01, 4, 0.05
    probs = [p_zone] * zones + [p_inst] * n
    for k in range(4):
        exact = 0.0
        for state in itertools.product((0, 1), repeat=len(probs)):
            if sum(state) <= k:
                exact += math.prod(p if down else 1 - p for p, down in zip(probs, state, strict=True))
        assert spot.prob_at_most_events(k, zones, p_zone, n, p_inst) == pytest.approx(exact, rel=1e-12)


def test_largest_zone_holds_at_most_ceil_share_of_each_group() -> None:
    """The lemma behind the spot tiers: with instances spread round-robin largest first, zone 0 (the largest)
    holds at most sum over groups of ceil(n_g / Z) x (the group's largest instance)."""
    rng = random.Random(7)
    for _ in range(3000):
        zones = rng.randint(1, 5)
        groups = [[rng.choice([rng.uniform(0.1, 1), 1.0]) * bound for _ in range(rng.randint(1, 9))]
                  for bound in (rng.uniform(0.5, 8) for _ in range(rng.randint(1, 4)))]
        capacities = [c for g in groups for c in g]
        largest_zone = max(sum(z) for z in spot.spread_over_zones(capacities, zones))
        bound = sum(math.ceil(len(g) / zones) * max(g) for g in groups)
        assert largest_zone <= bound + 1e-9


@pytest.mark.parametrize("target", [0.99, 0.999, 0.9999, 0.99999])
def test_spot_tier_rule_guarantees_the_target(target: float) -> None:
    """Random fleets that satisfy a tier's linear rule (what the MILP enforces) meet the target in the exact model,
    and for every tier some fleet sits close to the edge (the rule is not vacuous)."""
    rng = random.Random(int(target * 1e5))
    a = SpotAssumptions(interruption_rate_per_hour=rng.choice([0.02, 0.1]), zones=rng.choice([2, 3, 4]))
    p_rep = spot.replica_unavailability(a)
    tiers = spot.spot_tiers(target, a, p_rep)
    assert tiers[-1].events is None and all(t.zones == a.zones for t in tiers)
    checked = tight = 0
    for _ in range(1500):
        tier = rng.choice(tiers[:-1] or tiers)
        if tier.events is None:
            continue
        groups = []
        for _ in range(rng.randint(1, 3)):
            unit = rng.uniform(0.5, 4)
            n = rng.randint(1, max(1, min(tier.max_spot_replicas // 2, 5)))
            groups.append([unit * rng.choice([1.0, rng.uniform(0.3, 1)]) for _ in range(n)] + [unit])
        capacities = [c for g in groups for c in g]
        if len(capacities) > tier.max_spot_replicas:
            continue
        loss = tier.events * sum(math.ceil(len(g) / tier.zones) * max(g) for g in groups)
        if any(sum(g) < tier.events * math.ceil(len(g) / tier.zones) * max(g) for g in groups):
            continue
        demand = rng.uniform(1, 10)
        on_demand = max(0.0, demand + loss - sum(capacities) + rng.choice([0.0, rng.uniform(0, 1)]))
        assert on_demand + sum(capacities) - loss >= demand - 1e-9
        achieved = spot.availability(on_demand, capacities, demand, a, p_rep)
        assert achieved >= target, (tier, groups, on_demand, demand)
        checked += 1
        tight += achieved < 1 - 1e-12
    assert checked >= 200 and tight >= 20, (checked, tight)


def test_spot_tiers_relax_with_the_target() -> None:
    a = SpotAssumptions()
    p_rep = spot.replica_unavailability(a)
    loose, strict = spot.spot_tiers(0.99, a, p_rep), spot.spot_tiers(0.9999, a, p_rep)
    assert loose[0].events == strict[0].events == 1
    assert loose[0].max_spot_replicas > strict[0].max_spot_replicas >= 1
    # one zone: losing it takes all spot, so only the on-demand tier is left
    assert spot.spot_tiers(0.999, SpotAssumptions(zones=1), p_rep) == [spot.SpotTier(None, None, 1)]


def test_on_demand_instances_at_the_sla_floor_by_hand() -> None:
    a = SpotAssumptions()
    # One on-demand instance carrying the peak, down 0.5 % of the time (AWS's single-instance SLA floor): 0.995.
    assert spot.availability(0.0, [], 1.0, a, on_demand_units=[(1.0, 0.005)]) == pytest.approx(0.995)
    # Two, either enough alone: down only when both are, 1 - 0.005^2.
    assert spot.availability(0.0, [], 1.0, a, on_demand_units=[(1.0, 0.005)] * 2) == pytest.approx(1 - 0.005**2)
    # Three of capacity 0.5 for a peak of 1: any two suffice; P(at most one down) = 0.995^3 + 3 x 0.005 x 0.995^2.
    three = spot.availability(0.0, [], 1.0, a, on_demand_units=[(0.5, 0.005)] * 3)
    assert three == pytest.approx(0.995**3 + 3 * 0.005 * 0.995**2)
    # Always-up capacity still counts whole.
    assert spot.availability(1.0, [], 1.0, a, on_demand_units=[(1.0, 0.005)]) == 1.0


def test_on_demand_tiers_at_the_sla_floor() -> None:
    a = SpotAssumptions()
    tiers = spot.spot_tiers(0.999, a, spot.replica_unavailability(a), p_on_demand=0.005, spot=False)
    # k = 0 would need (1 - 0.005)^n >= 0.999: no n; k = 1: 1 - P(2 or more of n down) >= 0.999 up to n = 9.
    assert tiers[0].events == 1 and tiers[0].max_spot_replicas == 9
    assert spot.prob_at_most_events(1, 0, 0.0, 9, 0.005) >= 0.999 > spot.prob_at_most_events(1, 0, 0.0, 10, 0.005)
    assert all(t.on_demand_fails and not t.spot_counts for t in tiers)
    # A lower target lets a lone instance (or two) pass: 0.995^2 >= 0.99.
    loose = spot.spot_tiers(0.99, a, 0.0, p_on_demand=0.005, spot=False)
    assert (loose[0].events, loose[0].max_spot_replicas) == (0, 2)


@pytest.mark.parametrize("target", [0.99, 0.999, 0.9999])
def test_failing_on_demand_tier_rule_guarantees_the_target(target: float) -> None:
    """Random mixes of on-demand instances (failing independently) and spot replicas that satisfy a tier's rule with
    on-demand failures (what milp_build enforces: at most n_k instances that can fail; on-demand (+ spot) - k L >=
    peak, L the larger of a zone's spot content and the largest on-demand instance) meet the target exactly."""
    rng = random.Random(int(target * 1e5) + 7)
    a = SpotAssumptions(interruption_rate_per_hour=rng.choice([0.02, 0.1]), zones=3)
    p_rep, p_od = spot.replica_unavailability(a), 0.005
    tiers = [t for t in spot.spot_tiers(target, a, p_rep, p_on_demand=p_od) if t.events][:6]
    checked = tight = 0
    for _ in range(1500):
        tier = rng.choice(tiers)
        n_od = rng.randint(1, max(1, min(tier.max_spot_replicas, 6)))
        od_units = [rng.uniform(0.5, 3) for _ in range(n_od)]
        spot_caps: list[float] = []
        if tier.spot_counts and rng.random() < 0.5:
            unit = rng.uniform(0.5, 3)
            spot_caps = [unit] * rng.randint(1, 3)
        if n_od + len(spot_caps) > tier.max_spot_replicas:
            continue
        zone = math.ceil(len(spot_caps) / tier.zones) * max(spot_caps, default=0.0)
        if spot_caps and sum(spot_caps) < tier.events * zone:
            continue  # each spot group covers its own losses
        largest = max([zone, *od_units])
        counted = sum(od_units) + (sum(spot_caps) if tier.spot_counts else 0.0)
        demand = counted - tier.events * largest - rng.choice([0.0, rng.uniform(0, 0.5)])
        if demand <= 0:
            continue
        achieved = spot.availability(0.0, spot_caps, demand, a, p_rep, [(u, p_od) for u in od_units])
        assert achieved >= target, (tier, od_units, spot_caps, demand)
        checked += 1
        tight += achieved < 1 - 1e-9
    assert checked >= 200 and tight >= 20, (checked, tight)
