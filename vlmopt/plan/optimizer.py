"""The planner's mixed-integer program, solved with scipy.optimize.milp (HiGHS).

Mélange-style cost-aware bin packing (research/planning.md §6) extended with MIG layouts and a market dimension:

variables
  n[o, L]    GPUs bought from offer o (a GPU type at a price in one market) cut into layout L    (integer)
  k[o]       instances of offer o, when an instance holds several GPUs                         (integer)
  y[o,p,s,v] slices of profile p on offer o's GPUs running one replica of service s, variant v (integer)
  z[s, v]    service s runs variant v                                                          (binary)
  m[g]       ceil(spot replicas of spot group g / Z), g = (service, spot offer, variant, on MIG) (integer)
minimise     sum_o price_o * instances_o
subject to   sum_{s,v} y[o,p,s,v] <= sum_L count_L(p) * n[o, L]           slices exist (one replica per slice)
             sum y * cap * (1 - haircut_o) >= required_s                  capacity at SLO, peak x (1 + headroom)
  either (no spot tier: the even-spread approximation)
             sum y * cap * (zone share left if spot, else 1) >= floor_s   one zone's spot capacity lost at once
  or, with a spot tier (spot.py `spot_tiers`: survive any k zone / instance losses, at most n_k spot replicas):
             sum y * cap - k sum_g u_g m[g] >= floor_s,  Z m[g] >= sum y[g]   k losses take <= k sum_g ceil(.) u_g
             sum y[g] * cap >= k u_g m[g]                                  each spot group covers its own losses
             sum_spot y[., ., s, .] <= n_k                                 so P(<= k losses) >= the target
             (u_g: the most capacity of s one instance of the group's offer holds, `spot_unit_capacity`;
             the on-demand tier instead asks sum_od y * cap >= floor_s)
             sum_v z[s, v] = 1, y[., ., s, v] <= M * z[s, v]              one variant (one checkpoint) per service
             gpus_per_instance * k[o] >= sum_L n[o, L]                    instances come whole
             sum GPUs of type g <= quota_g, sum_L n[o, L] <= stock_o      quotas, fleet stock

Counting slices per (offer, profile) instead of per physical GPU is exact: the slices of one profile across the
n GPUs of an offer are interchangeable, so any counts y <= n * count can be laid out GPU by GPU (`lay_out_gpus`).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from vlmopt.schemas.catalog import Market

from .spot import SpotTier

WHOLE = "whole"

# Tie-breakers, far below any real price difference (prices are >= $0.01/h): fewer GPUs, then fewer replicas.
_EPS_GPU = 1e-6
_EPS_REPLICA = 1e-8


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


@dataclass
class Solution:
    status: str  # "optimal" | "infeasible" | "time_limit" | "error"
    message: str
    usd_per_hour: float = math.inf
    gpus: dict[tuple[str, Layout], int] = field(default_factory=dict)  # (offer key, layout) -> GPU count
    instances: dict[str, int] = field(default_factory=dict)
    replicas: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # (offer, slice, svc, var)
    variant_of: dict[str, str] = field(default_factory=dict)
    stats: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    @property
    def has_plan(self) -> bool:
        """A feasible answer exists: optimal, or the best one found when the time limit struck."""
        return math.isfinite(self.usd_per_hour)


def _replica_bound(offers: Sequence[Offer], demand: Demand, options: Sequence[ReplicaOption]) -> tuple[int, int]:
    """Most (on-demand, spot) replicas of one service's variant a cost-minimal solution needs.

    Dropping a replica never raises the cost, so in a minimal solution dropping any replica breaks some row. If one
    drop breaks the capacity row, the rest carry less than peak x (1 + headroom): all replicas number fewer than
    need / smallest effective capacity + 1. Otherwise dropping an on-demand replica breaks the zone row, so the
    on-demand replicas but one carry less than the peak (a spot tier's spot groups each contribute >= 0 there);
    spot replicas are within the tier's limit, and under the on-demand tier (spot not in the zone row) dropping a
    spot replica breaks no row but the capacity row, so spot replicas exist only in the first case."""
    smallest_cap = min(o.capacity_rps for o in options)
    tier = demand.spot_tier
    if tier is None:
        shares = [1 - o.haircut for o in offers] + [o.zone_share for o in offers if o.zone_share > 0]
        need = max(demand.required_rps, demand.floor_rps)
        bound = math.floor(need / (smallest_cap * max(min(shares), 1e-9))) + 1
        return bound, bound
    least_left = max(min(1 - o.haircut for o in offers), 1e-9)
    by_capacity = math.floor(demand.required_rps / (smallest_cap * least_left)) + 1
    by_floor = math.floor(demand.floor_rps / smallest_cap) + 1
    spot = tier.max_spot_replicas if tier.events and tier.max_spot_replicas is not None else by_capacity
    return max(by_capacity, by_floor), spot


SpotGroup = tuple[str, str, str, bool]  # (service, spot offer key, variant, on MIG layouts)


def spot_group(offer: Offer, option: ReplicaOption) -> SpotGroup:
    return (option.service, offer.key, option.variant, option.slice != WHOLE)


def spot_unit_capacity(problem: Problem) -> dict[SpotGroup, float]:
    """Spot group -> the most capacity of its service that one instance of the offer can hold: GPUs per instance
    x (one whole-GPU replica, or the best MIG layout's sum of the service's slice capacities). Whatever
    `lay_out_gpus` puts on one GPU is no more than that; the availability check counts an instance's GPUs of one
    layout together."""
    cap: dict[tuple[str, str, str, str], float] = {}
    for opt in problem.options:
        key = (opt.service, opt.variant, opt.gpu, opt.slice)
        cap[key] = max(cap.get(key, 0.0), opt.capacity_rps)
    pairs = {(opt.service, opt.variant, opt.gpu) for opt in problem.options if opt.capacity_rps > 0}
    out: dict[SpotGroup, float] = {}
    for offer in problem.offers:
        if offer.market != "spot":
            continue
        layouts = [lay for lay in problem.layouts if lay.gpu == offer.gpu]
        for svc, var, gpu in pairs:
            if gpu != offer.gpu:
                continue
            whole = cap.get((svc, var, gpu, WHOLE), 0.0) if any(not lay.is_mig for lay in layouts) else 0.0
            mig = max((sum(cap.get((svc, var, gpu, p), 0.0) for p in lay.slices) for lay in layouts if lay.is_mig),
                      default=0.0)
            for on_mig, per_gpu in ((False, whole), (True, mig)):
                if per_gpu > 0:
                    out[(svc, offer.key, var, on_mig)] = per_gpu * offer.gpus_per_instance
    return out


def useful_layouts(layouts: Sequence[Layout], usable: set[str]) -> list[Layout]:
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
    return kept


def solve(problem: Problem) -> Solution:
    started = time.perf_counter()
    offers = {o.key: o for o in problem.offers}
    demands = {d.service: d for d in problem.demands}
    options_by_gpu: dict[str, list[ReplicaOption]] = defaultdict(list)
    for opt in problem.options:
        if opt.service in demands and opt.capacity_rps > 0:
            options_by_gpu[opt.gpu].append(opt)
    all_layouts: dict[str, list[Layout]] = defaultdict(list)
    for layout in problem.layouts:
        all_layouts[layout.gpu].append(layout)
    layouts_by_gpu = {
        gpu: useful_layouts(lays, {o.slice for o in options_by_gpu.get(gpu, [])}) for gpu, lays in all_layouts.items()
    }

    col_cost: list[float] = []
    col_lb: list[float] = []
    col_ub: list[float] = []
    col_int: list[int] = []

    def add_var(cost: float, ub: float = np.inf, integer: bool = True) -> int:
        col_cost.append(cost)
        col_lb.append(0.0)
        col_ub.append(ub)
        col_int.append(1 if integer else 0)
        return len(col_cost) - 1

    n_idx: dict[tuple[str, Layout], int] = {}
    k_idx: dict[str, int] = {}
    y_idx: dict[tuple[str, str, str, str], int] = {}
    z_idx: dict[tuple[str, str], int] = {}
    y_meta: dict[int, tuple[Offer, ReplicaOption]] = {}

    options_by_sv: dict[tuple[str, str], list[ReplicaOption]] = defaultdict(list)
    for opt in problem.options:
        if opt.service in demands and opt.capacity_rps > 0:
            options_by_sv[(opt.service, opt.variant)].append(opt)
    units = spot_unit_capacity(problem)
    bound_sv = {sv: _replica_bound(problem.offers, demands[sv[0]], opts) for sv, opts in options_by_sv.items()}

    for offer in problem.offers:
        layouts = layouts_by_gpu.get(offer.gpu, [])
        if not layouts or not options_by_gpu.get(offer.gpu):
            continue
        per_gpu_cost = offer.usd_per_gpu_hour if offer.gpus_per_instance == 1 else 0.0
        stock_ub = offer.stock_gpus if offer.stock_gpus is not None else np.inf
        for layout in layouts:
            # On a cost tie prefer the whole GPU: no MIG reconfiguration to run, no slice overhead.
            n_idx[(offer.key, layout)] = add_var(per_gpu_cost + _EPS_GPU * (2 if layout.is_mig else 1), ub=stock_ub)
        if offer.gpus_per_instance > 1:
            k_idx[offer.key] = add_var(offer.usd_per_instance_hour)
        profiles = {p for layout in layouts for p in layout.slices}
        for opt in options_by_gpu[offer.gpu]:
            if opt.slice not in profiles:
                continue
            idx = add_var(_EPS_REPLICA, ub=bound_sv[(opt.service, opt.variant)][offer.market == "spot"])
            y_idx[(offer.key, opt.slice, opt.service, opt.variant)] = idx
            y_meta[idx] = (offer, opt)

    variants_of: dict[str, list[str]] = defaultdict(list)
    for (svc, var) in {(s, v) for (_, _, s, v) in y_idx}:
        variants_of[svc].append(var)
    for svc in demands:
        if not variants_of.get(svc):
            return Solution("infeasible", f"service {svc!r} has no replica option on any offered GPU")
    if problem.single_variant:
        for svc, vars_ in variants_of.items():
            if len(vars_) > 1:
                for var in sorted(vars_):
                    z_idx[(svc, var)] = add_var(0.0, ub=1.0)

    # Tiered spot rule: m[s, o, v] >= (spot replicas of s, v on offer o) / Z, integer (see `spot_tiers`).
    m_idx: dict[SpotGroup, int] = {}
    y_by_group: dict[SpotGroup, list[int]] = defaultdict(list)
    for idx, (offer, opt) in y_meta.items():
        tier = demands[opt.service].spot_tier
        if tier is None or not tier.events or offer.market != "spot":
            continue
        group = spot_group(offer, opt)
        y_by_group[group].append(idx)
        if group not in m_idx:
            m_idx[group] = add_var(0.0, ub=math.ceil(bound_sv[(opt.service, opt.variant)][1] / tier.zones))

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    row_lb: list[float] = []
    row_ub: list[float] = []

    def add_row(entries: Sequence[tuple[int, float]], lb: float, ub: float) -> None:
        r = len(row_lb)
        for c, v in entries:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        row_lb.append(lb)
        row_ub.append(ub)

    # Slices exist.
    y_by_offer_profile: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (okey, prof, _, _), idx in y_idx.items():
        y_by_offer_profile[(okey, prof)].append(idx)
    for (okey, prof), ys in y_by_offer_profile.items():
        entries = [(i, 1.0) for i in ys]
        for layout in layouts_by_gpu[offers[okey].gpu]:
            if layout.count(prof):
                entries.append((n_idx[(okey, layout)], -float(layout.count(prof))))
        add_row(entries, -np.inf, 0.0)

    # Capacity, and the zone-loss floor.
    y_by_service: dict[str, list[int]] = defaultdict(list)
    for (_, _, svc, _), idx in y_idx.items():
        y_by_service[svc].append(idx)
    any_zone_risk = any(o.zone_share < 1 for o in problem.offers)
    for svc, demand in demands.items():
        ys = y_by_service[svc]
        add_row([(i, y_meta[i][1].capacity_rps * (1 - y_meta[i][0].haircut)) for i in ys], demand.required_rps, np.inf)
        tier = demand.spot_tier
        spot_ys = [i for i in ys if y_meta[i][0].market == "spot"]
        if tier is None:
            if any_zone_risk and demand.floor_rps > 0:
                add_row(
                    [(i, y_meta[i][1].capacity_rps * y_meta[i][0].zone_share) for i in ys],
                    demand.floor_rps,
                    np.inf,
                )
            continue
        if not spot_ys:
            continue  # on-demand only: the capacity row already carries peak x (1 + headroom) >= the floor
        # spot counts in full here; the m terms take off what k zone / instance losses can take away
        entries = [(i, y_meta[i][1].capacity_rps) for i in ys if tier.events or y_meta[i][0].market != "spot"]
        for group, midx in m_idx.items():
            if group[0] == svc:
                entries.append((midx, -(tier.events or 0) * units[group]))
        if demand.floor_rps > 0:
            add_row(entries, demand.floor_rps, np.inf)
        if tier.max_spot_replicas is not None:
            add_row([(i, 1.0) for i in spot_ys], -np.inf, float(tier.max_spot_replicas))
    for key, midx in m_idx.items():
        tier = demands[key[0]].spot_tier
        assert tier is not None and tier.events
        ys = y_by_group[key]
        add_row([(i, -1.0) for i in ys] + [(midx, float(tier.zones))], 0.0, np.inf)
        # Each spot group carries its own worst-case loss (its zone-row contribution is >= 0): spot whose instance
        # holds far more than one replica (a MIG GPU, an 8-GPU instance) then cannot serve as bare headroom.
        add_row([(i, y_meta[i][1].capacity_rps) for i in ys] + [(midx, -tier.events * units[key])], 0.0, np.inf)

    # One variant per service.
    y_by_sv: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (_, _, svc, var), idx in y_idx.items():
        y_by_sv[(svc, var)].append(idx)
    if problem.single_variant:
        for svc, vars_ in variants_of.items():
            if len(vars_) <= 1:
                continue
            add_row([(z_idx[(svc, v)], 1.0) for v in vars_], 1.0, 1.0)
            for var in vars_:
                for on_spot in (False, True):
                    ys = [i for i in y_by_sv[(svc, var)] if (y_meta[i][0].market == "spot") == on_spot]
                    if ys:
                        bound = float(bound_sv[(svc, var)][on_spot])
                        add_row([(i, 1.0) for i in ys] + [(z_idx[(svc, var)], -bound)], -np.inf, 0.0)

    # Whole instances.
    for okey, kidx in k_idx.items():
        gpi = offers[okey].gpus_per_instance
        entries = [(kidx, float(gpi))] + [(i, -1.0) for (o, _), i in n_idx.items() if o == okey]
        add_row(entries, 0.0, np.inf)

    # Quotas per GPU type (in GPUs; an instance counts all its GPUs).
    for gpu, quota in problem.quotas.items():
        entries: list[tuple[int, float]] = []
        for offer in problem.offers:
            if offer.gpu != gpu:
                continue
            if offer.key in k_idx:
                entries.append((k_idx[offer.key], float(offer.gpus_per_instance)))
            else:
                entries += [(i, 1.0) for (o, _), i in n_idx.items() if o == offer.key]
        if entries:
            add_row(entries, -np.inf, float(quota))

    # Fleet stock per pool.
    for offer in problem.offers:
        if offer.stock_gpus is None:
            continue
        entries = [(i, 1.0) for (o, _), i in n_idx.items() if o == offer.key]
        if len(entries) > 1:
            add_row(entries, -np.inf, float(offer.stock_gpus))

    n_vars = len(col_cost)
    stats: dict[str, float | int | str] = {
        "solver": "scipy.optimize.milp (HiGHS)",
        "variables": n_vars,
        "integer_variables": int(sum(col_int)),
        "constraints": len(row_lb),
    }
    constraints = []
    if row_lb:
        a = coo_matrix((vals, (rows, cols)), shape=(len(row_lb), n_vars)).tocsr()
        constraints.append(LinearConstraint(a, np.array(row_lb), np.array(row_ub)))
    result = milp(
        c=np.array(col_cost),
        constraints=constraints,
        integrality=np.array(col_int),
        bounds=Bounds(np.array(col_lb), np.array(col_ub)),
        options={"time_limit": problem.time_limit_s, "mip_rel_gap": problem.mip_rel_gap, "disp": False},
    )
    stats["solve_seconds"] = round(time.perf_counter() - started, 4)
    stats["highs_status"] = int(result.status)
    stats["mip_rel_gap_tolerance"] = problem.mip_rel_gap
    gap = getattr(result, "mip_gap", None)
    if gap is not None and math.isfinite(gap):
        stats["mip_gap"] = round(float(gap), 6)
    if result.status == 2:
        return Solution("infeasible", "the mixed-integer program has no feasible solution", stats=stats)
    if result.x is None:
        status = "time_limit" if result.status == 1 else "error"
        return Solution(status, str(result.message), stats=stats)

    x = np.round(result.x).astype(int)
    gpus = {key: int(x[i]) for key, i in n_idx.items() if x[i] > 0}
    replicas = {key: int(x[i]) for key, i in y_idx.items() if x[i] > 0}
    gpus_per_offer: dict[str, int] = defaultdict(int)
    for (okey, _), count in gpus.items():
        gpus_per_offer[okey] += count
    instances = {okey: math.ceil(count / offers[okey].gpus_per_instance) for okey, count in gpus_per_offer.items()}
    cost = sum(offers[o].usd_per_instance_hour * n for o, n in instances.items())
    variant_of: dict[str, str] = {}
    for (_, _, svc, var) in replicas:
        variant_of.setdefault(svc, var)
    if result.status == 1:
        stats["note"] = "time limit reached; best solution found is returned"
    return Solution(
        "optimal" if result.status == 0 else "time_limit",
        str(result.message),
        usd_per_hour=cost,
        gpus=gpus,
        instances=instances,
        replicas=replicas,
        variant_of=variant_of,
        stats=stats,
    )


@dataclass(frozen=True)
class PlacedGpu:
    """One physical GPU of a solution: its offer, its layout trimmed to the used slices, and who runs where."""

    offer: str
    layout: Layout
    assignment: tuple[tuple[str, str, str, int | None], ...]  # (slice, service, variant, start)


def lay_out_gpus(problem: Problem, solution: Solution) -> list[tuple[PlacedGpu, int]]:
    """Turn aggregate slice counts into identical-GPU groups: [(gpu, how many GPUs look exactly like it)].

    Fills GPUs column by column, largest slices first; unused slices are dropped from the layout (a subset of a
    valid placement is valid, and mig-parted should not create idle instances)."""
    remaining: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for (okey, prof, svc, var), count in sorted(solution.replicas.items()):
        remaining[(okey, prof)] += [(svc, var)] * count
    groups: dict[PlacedGpu, int] = defaultdict(int)
    for (okey, layout), count in sorted(solution.gpus.items(), key=lambda kv: (kv[0][0], kv[0][1].slices)):
        for _ in range(count):
            used: list[tuple[str, str, str, int | None]] = []
            for pos, prof in enumerate(layout.slices):
                queue = remaining.get((okey, prof))
                if queue:
                    svc, var = queue.pop(0)
                    start = layout.starts[pos] if layout.starts else None
                    used.append((prof, svc, var, start))
            if not used:
                continue
            kept = Layout(
                layout.gpu,
                tuple(u[0] for u in used),
                tuple(u[3] for u in used) if layout.starts else None,  # type: ignore[misc]
            )
            groups[PlacedGpu(okey, kept, tuple(used))] += 1
    return sorted(groups.items(), key=lambda kv: (kv[0].offer, kv[0].layout.slices, kv[0].assignment))
