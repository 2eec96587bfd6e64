"""Spot availability model: how much spot capacity is really there, and what an on-demand floor buys.

Two failure modes (docs/cost-model.md §2 gives the sources and figures):
- independent interruptions of single spot instances (AWS gives a 2-minute notice; a replacement replica needs an
  instance launch, an image pull and a model load before it serves again);
- correlated loss of a whole zone's spot capacity of one instance type: "co-interruptions within the same instance
  type and availability zone occur within three minutes in over 92 % of cases" (Spot-and-Scoot, arXiv 2604.16457).

The policy follows SkyServe/SpotHedge (Mao et al., arXiv 2411.01438): spread spot replicas
over zones, over-provision spot (`num_overprovision`), keep an on-demand floor (`base_ondemand_fallback_replicas`)
that, with the surviving zones, still carries the peak when one zone's spot capacity goes at once, and fall back
to on-demand while spot is gone (`dynamic_ondemand_fallback`), which is what the expected cost prices in.

Each replica alternates between up (mean 1/rate hours) and down (mean recovery hours): an alternating renewal
process, whose long-run down fraction is rate*recovery / (1 + rate*recovery).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vlmopt.schemas.workload import SpotAssumptions

# Probabilities below this are dropped while convolving loss distributions; keeps the state space small without
# moving an availability figure by more than ~1e-12.
_NEGLIGIBLE = 1e-15


def unavailable_fraction(rate_per_hour: float, recovery_hours: float) -> float:
    """Long-run fraction of time one spot replica is down (alternating renewal process)."""
    if rate_per_hour < 0 or recovery_hours < 0:
        raise ValueError("rate and recovery time must be non-negative")
    down = rate_per_hour * recovery_hours
    return down / (1.0 + down)


def replica_unavailability(assumptions: SpotAssumptions, rate_per_hour: float | None = None) -> float:
    """Down fraction of one spot replica from independent interruptions (zone-wide loss is handled separately)."""
    rate = assumptions.interruption_rate_per_hour if rate_per_hour is None else rate_per_hour
    return unavailable_fraction(rate, assumptions.recovery_hours)


def zone_unavailability(assumptions: SpotAssumptions) -> float:
    """Down fraction of one zone's whole spot capacity."""
    return unavailable_fraction(assumptions.zone_loss_rate_per_hour, assumptions.zone_recovery_hours)


def zone_survival_share(zones: int) -> float:
    """Share of evenly spread spot capacity left when one zone goes: (Z-1)/Z; 0 with one zone."""
    if zones < 1:
        raise ValueError("zones must be >= 1")
    return (zones - 1) / zones


def spread_over_zones(capacities: Sequence[float], zones: int) -> list[list[float]]:
    """Round-robin the spot replicas' capacities over zones, largest first, so zone shares differ by <= one replica."""
    buckets: list[list[float]] = [[] for _ in range(zones)]
    for i, cap in enumerate(sorted(capacities, reverse=True)):
        buckets[i % zones].append(cap)
    return buckets


def _loss_distribution(capacities: Sequence[float], p_down: float,
                       dist: dict[float, float] | None = None) -> dict[float, float]:
    """Distribution of capacity lost when each replica is independently down with probability p_down (convolved
    into `dist`, a distribution of capacity already lost, when given)."""
    dist = {0.0: 1.0} if dist is None else dist
    groups: dict[float, int] = {}
    for cap in capacities:
        key = round(cap, 9)
        groups[key] = groups.get(key, 0) + 1
    for cap, count in groups.items():
        step: dict[float, float] = {}
        for k in range(count + 1):
            p = math.comb(count, k) * p_down**k * (1 - p_down) ** (count - k)
            if p > _NEGLIGIBLE:
                step[cap * k] = p
        merged: dict[float, float] = {}
        for lost_a, pa in dist.items():
            for lost_b, pb in step.items():
                p = pa * pb
                if p > _NEGLIGIBLE:
                    key = round(lost_a + lost_b, 9)
                    merged[key] = merged.get(key, 0.0) + p
        dist = merged
    return dist


def availability(
    on_demand_rps: float,
    spot_replica_rps: Sequence[float],
    demand_rps: float,
    assumptions: SpotAssumptions,
    p_replica_down: float | None = None,
    on_demand_units: Sequence[tuple[float, float]] = (),
) -> float:
    """P(capacity >= demand) for one service: `on_demand_rps` always up, on-demand instances `on_demand_units`
    ((capacity, share of time down) each, independently: the cloud's single-instance SLA, sla.py), and spot
    replicas spread over `assumptions.zones` zones; each zone is independently lost whole, and each surviving spot
    replica independently down.

    Exact: enumerates the 2^Z zone states and convolves per-replica binomials.
    """
    if demand_rps <= 0:
        return 1.0
    replica_down = replica_unavailability(assumptions) if p_replica_down is None else p_replica_down
    zone_down = zone_unavailability(assumptions)
    on_demand_rps += sum(cap for cap, _ in on_demand_units)
    on_demand_loss: dict[float, float] = {0.0: 1.0}
    by_p: dict[float, list[float]] = {}
    for cap, p in on_demand_units:
        by_p.setdefault(p, []).append(cap)
    for p, caps in by_p.items():
        on_demand_loss = _loss_distribution(caps, p, on_demand_loss)
    zones = spread_over_zones(spot_replica_rps, assumptions.zones)
    total = 0.0
    for state in itertools.product((True, False), repeat=len(zones)):
        p_state = math.prod((1 - zone_down) if up else zone_down for up in state)
        if p_state <= _NEGLIGIBLE:
            continue
        alive = [cap for up, zone in zip(state, zones, strict=True) for cap in zone if up]
        slack = on_demand_rps + sum(alive) - demand_rps
        if slack < -1e-9:
            continue
        losses = _loss_distribution(alive, replica_down, dict(on_demand_loss))
        p_ok = sum(p for lost, p in losses.items() if lost <= slack + 1e-9)
        total += p_state * p_ok
    return min(1.0, total)


def prob_at_most_events(k: int, zones: int, p_zone: float, instances: int, p_instance: float) -> float:
    """P(at most k of the independent loss events happen): Z zone losses (each p_zone) and n instance
    interruptions (each p_instance)."""
    def binom_pmf(n: int, j: int, p: float) -> float:
        return math.comb(n, j) * p**j * (1 - p) ** (n - j)

    total = 0.0
    for j in range(min(k, zones) + 1):
        total += binom_pmf(zones, j, p_zone) * sum(binom_pmf(instances, i, p_instance)
                                                  for i in range(min(k - j, instances) + 1))
    return min(1.0, total)


@dataclass(frozen=True)
class SpotTier:
    """A rule the planner's MILP enforces per service that guarantees the availability target (`spot_tiers`).

    events: k, how many loss events at once (one zone's spot capacity, one spot instance, and with
    `on_demand_fails` one on-demand instance) the capacity must survive; None: on-demand carries the peak alone and
    never fails (the rule when on-demand failures are not modelled).
    max_spot_replicas: n_k, the most instances that may fail (spot ones, and on-demand ones with `on_demand_fails`)
    for which P(at most k events) >= the target.
    zones: Z, the zones spot replicas are spread over.
    on_demand_fails: on-demand instances are loss events too (they count towards n_k, and one of them is among
    what a single event can take).
    spot_counts: spot capacity counts towards the peak; False: on-demand carries it alone (spot is headroom)."""

    events: int | None
    max_spot_replicas: int | None
    zones: int = 1
    on_demand_fails: bool = False
    spot_counts: bool = True


def _most_instances(k: int, zones: int, p_zone: float, p_instance: float, target: float, limit: int) -> int:
    """The largest n <= limit with P(at most k of Z zone losses and n instance losses) >= target (0 if none): the
    probability falls as n grows, so bisect."""
    if prob_at_most_events(k, zones, p_zone, 1, p_instance) < target:
        return 0
    lo, hi = 1, limit
    if prob_at_most_events(k, zones, p_zone, hi, p_instance) >= target:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if prob_at_most_events(k, zones, p_zone, mid, p_instance) >= target:
            lo = mid
        else:
            hi = mid
    return lo


# On-demand tiers are tried up to this many losses at once (far beyond what any service's replica count needs).
MAX_ON_DEMAND_EVENTS = 64


def spot_tiers(target: float, assumptions: SpotAssumptions, p_instance: float, limit: int = 4096,
               p_on_demand: float = 0.0, spot: bool = True) -> list[SpotTier]:
    """The tiers a service may use, least conservative first: the spot tiers (with `spot`), then the on-demand
    tiers. Without on-demand failures (`p_on_demand` 0) the one on-demand tier is "on-demand carries the peak";
    with them, on-demand tiers k = 0, 1, ...: on-demand capacity survives any k on-demand instance losses, with
    at most n_k on-demand instances (P(at most k of them down) >= the target), spot as headroom.

    Why a tier guarantees the target (docs/cost-model.md §2). The exact model (`availability`) spreads a service's
    spot instances over Z zones round-robin, largest first. Group them (by offer and variant): n_g instances in
    group g, each holding at most u_g of the service's capacity. Then the largest zone holds at most
    sum_g ceil(n_g / Z) u_g: charge zone 0's i-th instance (i >= 1) to an instance of the block of Z positions
    before it (all at least as large); blocks are disjoint, and by Hall's theorem the charges can be spread so that
    group g takes at most ceil(n_g / Z) of them, as any set of blocks holds Z instances per block. One instance
    holds at most as much as the largest zone (it sits in zone 0). So any k events take at most k times that, and

        on-demand + spot - k sum_g ceil(n_g / Z) u_g >= peak

    (linear with an integer m_g >= n_g / Z; the MILP counts replicas, at least as many as instances) keeps the peak
    served whenever at most k events happen. With at most n_k spot instances, P(at most k events) >= target, and
    the exact availability, which also counts the states where more events happen but capacity is left over, is at
    least that. For k >= Z the rule leaves spot nothing to count (sum_g ceil(n_g/Z) u_g >= S/Z), so the tiers stop
    there and the on-demand tier takes over: on-demand >= peak, spot replicas unlimited (availability 1).

    With on-demand failures the spot tiers count on-demand instances among their n_k too, at the larger of the two
    instance down shares (a conservative bound: P(at most k events) only falls as any event grows likelier); and
    the largest thing one event can take is a zone's spot content or one on-demand instance, whichever is more,
    which is what the MILP's loss variable bounds (milp_build.py)."""
    p_zone = zone_unavailability(assumptions)
    zones = assumptions.zones
    fails = p_on_demand > 0
    tiers: list[SpotTier] = []
    if spot:
        for k in range(1, zones):
            n = _most_instances(k, zones, p_zone, max(p_instance, p_on_demand), target, limit)
            if n >= 1:
                tiers.append(SpotTier(k, n, zones, on_demand_fails=fails))
            if n >= limit:
                break
    if not fails:
        tiers.append(SpotTier(None, None, zones))
        return tiers
    for k in range(MAX_ON_DEMAND_EVENTS + 1):
        n = _most_instances(k, 0, 0.0, p_on_demand, target, limit)
        if n >= 1:
            tiers.append(SpotTier(k, n, zones, on_demand_fails=True, spot_counts=False))
        if n >= limit:
            break
    return tiers


@dataclass(frozen=True)
class SpotCost:
    """Hourly cost of a mix: as priced, expected with on-demand fallback while spot is down, and the worst case."""

    usd_per_hour: float
    expected_usd_per_hour: float
    worst_case_usd_per_hour: float


def spot_cost(
    on_demand_usd: float,
    spot_usd: float,
    spot_fallback_usd: float,
    assumptions: SpotAssumptions,
    p_replica_down: float | None = None,
) -> SpotCost:
    """Expected: each spot GPU is down for a fraction of time, and then runs on on-demand fallback (SkyServe's
    dynamic fallback) at `spot_fallback_usd` (the on-demand price of the same capacity) instead of the spot price.
    Worst case: every spot GPU at once replaced by on-demand (the spot market of that type dries up everywhere)."""
    replica_down = replica_unavailability(assumptions) if p_replica_down is None else p_replica_down
    p_down = 1 - (1 - replica_down) * (1 - zone_unavailability(assumptions))
    expected = on_demand_usd + (1 - p_down) * spot_usd + p_down * spot_fallback_usd
    return SpotCost(
        usd_per_hour=on_demand_usd + spot_usd,
        expected_usd_per_hour=expected,
        worst_case_usd_per_hour=on_demand_usd + spot_fallback_usd,
    )


@dataclass(frozen=True)
class SpotMix:
    on_demand_replicas: int
    spot_replicas: int
    availability: float
    usd_per_hour: float


def choose_spot_mix(
    demand_rps: float,
    replica_rps: float,
    on_demand_usd_per_replica: float,
    spot_usd_per_replica: float,
    target: float,
    assumptions: SpotAssumptions,
    max_replicas: int = 64,
) -> SpotMix | None:
    """Cheapest (on-demand floor, spot count) of one replica type meeting `target` availability at `demand_rps`.

    Exhaustive over counts up to `max_replicas`, for one replica type; the planner's MILP instead enforces a
    `spot_tiers` rule, linear and sufficient for the target, and reports `availability` of its answer.
    """
    if replica_rps <= 0:
        raise ValueError("replica_rps must be positive")
    best: SpotMix | None = None
    for on_demand in range(max_replicas + 1):
        for on_spot in range(max_replicas + 1 - on_demand):
            cost = on_demand * on_demand_usd_per_replica + on_spot * spot_usd_per_replica
            if best is not None and cost >= best.usd_per_hour - 1e-12:
                continue
            if (on_demand + on_spot) * replica_rps < demand_rps:
                continue
            avail = availability(on_demand * replica_rps, [replica_rps] * on_spot, demand_rps, assumptions)
            if avail >= target:
                best = SpotMix(on_demand, on_spot, avail, cost)
    return best
