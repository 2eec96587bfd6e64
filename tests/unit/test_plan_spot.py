"""Spot availability model: closed forms on small cases, and the chosen mix really meets its target."""

from __future__ import annotations

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
