"""The optimizer's vocabulary: offers, layouts, replica options, demands, the problem and its solution, and the
pure rules the MILP is built from (spot groups and their unit capacity, useful layouts, replica bounds).
docs/cost-model.md#3-the-optimizer-optimizerpy has the formulation."""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from vlmopt.schemas.catalog import Market

from .spot import SpotTier

WHOLE = "whole"

@dataclass(frozen=True)
class Offer:
    """A GPU you can get: one price row (cloud mode) or one pool of identical inventory GPUs (fleet mode)."""

    key: str
    gpu: str
    market: Market
    usd_per_instance_hour: float
    gpus_per_instance: int = 1
    stock_gpus: int | None = None
    haircut: float = 0.0  # expected share of this offer's capacity down at any time (spot; spot.py)
    zone_share: float = 1.0  # share of its capacity left when one zone's spot capacity goes at once

    def __post_init__(self) -> None:
        if not 0 <= self.haircut < 1 or not 0 <= self.zone_share <= 1:
            raise ValueError(f"offer {self.key}: haircut must be in [0, 1) and zone_share in [0, 1]")

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_instance_hour / self.gpus_per_instance


@dataclass(frozen=True)
class Layout:
    """How every GPU of a column is cut: ('whole',) or MIG profile names (with their start slots)."""

    gpu: str
    slices: tuple[str, ...]
    starts: tuple[int, ...] | None = None

    @property
    def is_mig(self) -> bool:
        return self.slices != (WHOLE,)

    def count(self, profile: str) -> int:
        return self.slices.count(profile)

    @property
    def label(self) -> str:
        return WHOLE if not self.is_mig else "+".join(self.slices)


@dataclass(frozen=True)
class ReplicaOption:
    """One replica of (service, variant) on a (gpu, slice) that fits in memory and meets the SLO."""

    service: str
    variant: str
    gpu: str
    slice: str
    capacity_rps: float


@dataclass(frozen=True)
class Demand:
    service: str
    required_rps: float  # capacity after the spot haircut must reach this: peak x (1 + headroom) (+ extra)
    floor_rps: float = 0.0  # capacity left after one zone's spot capacity goes must reach this: the peak
    # None: the floor assumes spot capacity evenly spread over zones (zone share). A tier: the floor holds after any
    # k zone or instance losses, with at most n_k spot replicas, which guarantees the availability target (spot.py).
    spot_tier: SpotTier | None = None
    # Where on-demand instances fail (a tier's `on_demand_fails`): the most capacity one on-demand instance of the plan
    # holds, as a constant the solve rounds set (solve.py); None: the MILP decides it with a binary per on-demand
    # group, exact but far slower to solve.
    on_demand_loss_rps: float | None = None


@dataclass
class Problem:
    offers: list[Offer]
    layouts: list[Layout]
    options: list[ReplicaOption]
    demands: list[Demand]
    quotas: dict[str, int] = field(default_factory=dict)
    single_variant: bool = True
    time_limit_s: float = 60.0
    mip_rel_gap: float = 1e-6  # HiGHS stops once the best plan is within this fraction of the lower bound
    # The MIG-slice options that may also run on spot offers; None: all of them (pruning narrows it, problem.py).
    spot_mig: frozenset[ReplicaOption] | None = None
    # (GPU, MIG profile) -> (share of the GPU's compute slices, share of its memory slices) the slice takes, for the
    # per-service relaxation's slice prices (by_service.py).
    mig_slice_resources: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # The per-service relaxation (by_service.py): a MIG slice costs this share of its GPU's price, bought one by one,
    # and a multi-GPU instance is bought GPU by GPU; None: GPUs and instances are bought whole (the real problem).
    slice_price_share: dict[tuple[str, str], float] | None = None
    # Replica counts decided beforehand (by_service.py packs them onto GPUs); None: the MILP chooses them.
    fixed_replicas: dict[tuple[str, str, str, str], int] | None = None

    def on_offer(self, option: ReplicaOption, offer: Offer) -> bool:
        """Whether this option may run on this offer's GPUs."""
        if option.gpu != offer.gpu:
            return False
        return (self.spot_mig is None or offer.market != "spot" or option.slice == WHOLE
                or option in self.spot_mig)


@dataclass
class Solution:
    status: str  # "optimal" | "infeasible" | "time_limit" | "error"
    message: str
    usd_per_hour: float = math.inf
    gpus: dict[tuple[str, Layout], int] = field(default_factory=dict)  # (offer key, layout) -> GPU count
    instances: dict[str, int] = field(default_factory=dict)
    replicas: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # (offer, slice, svc, var)
    variant_of: dict[str, str] = field(default_factory=dict)
    objective: float = math.inf  # the MILP's objective: $/h plus the tie-breakers
    objective_bound: float | None = None  # HiGHS's proven lower bound on it
    stats: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    @property
    def proven_gap(self) -> float | None:
        """How far above the optimum this plan can be, as a fraction of its cost: (objective - bound) / objective."""
        if not self.has_plan or self.objective_bound is None or not math.isfinite(self.objective):
            return None
        return max(0.0, self.objective - self.objective_bound) / max(abs(self.objective), 1e-12)

    def bound_by(self, bound: float) -> Solution:
        """This solution with `bound` as its proven lower bound (never above its own cost), its gap recorded."""
        self.objective_bound = min(self.objective, bound)
        gap = self.proven_gap
        if gap is not None:
            self.stats["proven_gap"] = round(gap, 6)
        return self

    @property
    def has_plan(self) -> bool:
        """A feasible answer exists: optimal, or the best one found when the time limit struck."""
        return math.isfinite(self.usd_per_hour)


def replica_bound(offers: Sequence[Offer], demand: Demand, options: Sequence[ReplicaOption],
                  largest_unit: float = 0.0) -> tuple[int, int]:
    """Most (on-demand, spot) replicas of one service's variant a cost-minimal solution needs.

    Dropping a replica never raises the cost, so in a minimal solution dropping any replica breaks some row. If one
    drop breaks the capacity row, the rest carry less than peak x (1 + headroom): all replicas number fewer than
    need / smallest effective capacity + 1. Otherwise dropping an on-demand replica breaks the zone row, so the
    on-demand replicas but one carry less than the peak (a spot tier's spot groups each contribute >= 0 there);
    spot replicas are within the tier's limit, and under the on-demand tier (spot not in the zone row) dropping a
    spot replica breaks no row but the capacity row, so spot replicas exist only in the first case. When on-demand
    instances fail too (a tier's `on_demand_fails`), the floor row takes k x L off, L at most `largest_unit` (the
    most one instance holds), so the on-demand replicas but one carry less than the peak + k x largest_unit; and
    the tier's limit caps them."""
    smallest_cap = min(o.capacity_rps for o in options)
    tier = demand.spot_tier
    if tier is None:
        shares = [1 - o.haircut for o in offers] + [o.zone_share for o in offers if o.zone_share > 0]
        need = max(demand.required_rps, demand.floor_rps)
        bound = math.floor(need / (smallest_cap * max(min(shares), 1e-9))) + 1
        return bound, bound
    least_left = max(min(1 - o.haircut for o in offers), 1e-9)
    by_capacity = math.floor(demand.required_rps / (smallest_cap * least_left)) + 1
    losses = (tier.events or 0) * largest_unit if tier.on_demand_fails else 0.0
    by_floor = math.floor((demand.floor_rps + losses) / smallest_cap) + 1
    limited = tier.events is not None and tier.max_spot_replicas is not None
    spot = tier.max_spot_replicas if limited and tier.events and tier.spot_counts else by_capacity
    on_demand = max(by_capacity, by_floor)
    if limited and tier.on_demand_fails:
        on_demand = min(on_demand, tier.max_spot_replicas)
    return on_demand, spot


SpotGroup = tuple[str, str, str, bool]  # (service, spot offer key, variant, on MIG layouts)


def spot_group(offer: Offer, option: ReplicaOption) -> SpotGroup:
    return (option.service, offer.key, option.variant, option.slice != WHOLE)


def on_demand_units_used(problem: Problem, solution: Solution,
                         units: dict[SpotGroup, float] | None = None) -> dict[str, float]:
    """Per service, the most capacity one on-demand instance of `solution` holds (the loss one on-demand instance
    failure takes, spot_unit_capacity's bound); `units` is spot_unit_capacity(problem, ("on_demand",)) if known."""
    units = spot_unit_capacity(problem, ("on_demand",)) if units is None else units
    market = {o.key: o.market for o in problem.offers}
    used: dict[str, float] = {}
    for (offer_key, slice_name, svc, variant), count in solution.replicas.items():
        if count > 0 and market[offer_key] == "on_demand":
            unit = units.get((svc, offer_key, variant, slice_name != WHOLE), 0.0)
            used[svc] = max(used.get(svc, 0.0), unit)
    return used


def spot_unit_capacity(problem: Problem, markets: tuple[str, ...] = ("spot",)) -> dict[SpotGroup, float]:
    """Group (service, offer, variant, on MIG) -> the most capacity of its service that one instance of the offer
    can hold: GPUs per instance x (one whole-GPU replica, or the best MIG layout's sum of the service's slice
    capacities). Whatever `lay_out_gpus` puts on one GPU is no more than that; the availability check counts an
    instance's GPUs of one layout together. Spot offers by default; on-demand ones too where their instances
    fail (`markets`)."""
    caps: dict[bool, dict[tuple[str, str, str, str], float]] = {True: {}, False: {}}  # on spot?
    for opt in problem.options:
        key = (opt.service, opt.variant, opt.gpu, opt.slice)
        for on_spot, cap in caps.items():
            if on_spot and problem.spot_mig is not None and opt.slice != WHOLE and opt not in problem.spot_mig:
                continue  # never on a spot instance
            cap[key] = max(cap.get(key, 0.0), opt.capacity_rps)
    pairs = {(opt.service, opt.variant, opt.gpu) for opt in problem.options if opt.capacity_rps > 0}
    layouts_of: dict[str, list[Layout]] = {}
    for lay in problem.layouts:
        layouts_of.setdefault(lay.gpu, []).append(lay)
    per_gpu_cache: dict[tuple[bool, str, str, str], tuple[float, float]] = {}

    def per_gpu(on_spot: bool, svc: str, var: str, gpu: str) -> tuple[float, float]:
        """(one whole-GPU replica, the best MIG layout's slices) of the service's variant on one GPU."""
        key = (on_spot, svc, var, gpu)
        if key not in per_gpu_cache:
            cap, layouts = caps[on_spot], layouts_of.get(gpu, [])
            whole = cap.get((svc, var, gpu, WHOLE), 0.0) if any(not lay.is_mig for lay in layouts) else 0.0
            mig = max((sum(cap.get((svc, var, gpu, p), 0.0) for p in lay.slices) for lay in layouts if lay.is_mig),
                      default=0.0)
            per_gpu_cache[key] = (whole, mig)
        return per_gpu_cache[key]

    out: dict[SpotGroup, float] = {}
    for offer in problem.offers:
        if offer.market not in markets:
            continue
        for svc, var, gpu in pairs:
            if gpu != offer.gpu:
                continue
            whole, mig = per_gpu(offer.market == "spot", svc, var, gpu)
            for on_mig, capacity in ((False, whole), (True, mig)):
                if capacity > 0:
                    out[(svc, offer.key, var, on_mig)] = capacity * offer.gpus_per_instance
    return out


def useful_layouts(layouts: Sequence[Layout], usable: set[str]) -> list[Layout]:
    return list(_useful_layouts(tuple(layouts), frozenset(usable)))


@functools.lru_cache(maxsize=4096)  # the same GPU's layouts come back in every solve of a plan
def _useful_layouts(layouts: tuple[Layout, ...], usable: frozenset[str]) -> tuple[Layout, ...]:
    """The layouts worth a column: a layout's slices that no option can use stay idle, so what it offers is its
    count of usable slices per profile; a layout offering no more than another one (same price: same GPU) is
    dropped, as is one offering nothing. Exact: any plan on a dropped layout runs as well on the one dominating it."""
    offered = [(lay, Counter(p for p in lay.slices if p in usable)) for lay in layouts]
    offered = [(lay, counts) for lay, counts in offered if counts]
    kept = []
    for i, (lay, counts) in enumerate(offered):
        dominated = any(
            j != i and all(other[p] >= n for p, n in counts.items()) and (other != counts or j < i)
            for j, (_, other) in enumerate(offered)
        )
        if not dominated:
            kept.append(lay)
    return tuple(kept)
