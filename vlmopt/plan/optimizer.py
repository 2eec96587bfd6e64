"""The planner's mixed-integer program, solved with scipy.optimize.milp (HiGHS).

Mélange-style cost-aware bin packing (research/planning.md §6) extended with MIG layouts and a market dimension:

variables
  n[o, L]    GPUs bought from offer o (a GPU type at a price in one market) cut into layout L    (integer)
  k[o]       instances of offer o, when an instance holds several GPUs                         (integer)
  y[o,p,s,v] slices of profile p on offer o's GPUs running one replica of service s, variant v (integer)
  z[s, v]    service s runs variant v                                                          (binary)
minimise     sum_o price_o * instances_o
subject to   sum_{s,v} y[o,p,s,v] <= sum_L count_L(p) * n[o, L]           slices exist (one replica per slice)
             sum y * cap * (1 - haircut_o) >= required_s                  capacity at SLO, peak x (1 + headroom)
             sum y * cap * (zone share left if spot, else 1) >= floor_s   one zone's spot capacity lost at once
             sum_v z[s, v] = 1, y[., ., s, v] <= M * z[s, v]              one variant (one checkpoint) per service
             gpus_per_instance * k[o] >= sum_L n[o, L]                    instances come whole
             sum GPUs of type g <= quota_g, sum_L n[o, L] <= stock_o      quotas, fleet stock

Counting slices per (offer, profile) instead of per physical GPU is exact: the slices of one profile across the
n GPUs of an offer are interchangeable, so any counts y <= n * count can be laid out GPU by GPU (`lay_out_gpus`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from vlmopt.schemas.catalog import Market

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
    spot_extra_rps: float = 0.0  # more capacity required only if the service runs on spot (over-provisioning)


@dataclass
class Problem:
    offers: list[Offer]
    layouts: list[Layout]
    options: list[ReplicaOption]
    demands: list[Demand]
    quotas: dict[str, int] = field(default_factory=dict)
    single_variant: bool = True
    time_limit_s: float = 60.0


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


def _replica_bound(offers: Sequence[Offer], demand: Demand, options: Sequence[ReplicaOption]) -> int:
    """Most replicas of one service a cost-minimal solution needs: dropping any replica of a minimal solution
    breaks a capacity constraint, so it has fewer than need / smallest effective capacity + 1 replicas."""
    shares = [1 - o.haircut for o in offers] + [o.zone_share for o in offers if o.zone_share > 0]
    smallest = min(o.capacity_rps for o in options) * max(min(shares), 1e-9)
    need = max(demand.required_rps + demand.spot_extra_rps, demand.floor_rps)
    return math.floor(need / smallest) + 1


def solve(problem: Problem) -> Solution:
    started = time.perf_counter()
    offers = {o.key: o for o in problem.offers}
    layouts_by_gpu: dict[str, list[Layout]] = defaultdict(list)
    for layout in problem.layouts:
        layouts_by_gpu[layout.gpu].append(layout)
    demands = {d.service: d for d in problem.demands}
    options_by_gpu: dict[str, list[ReplicaOption]] = defaultdict(list)
    for opt in problem.options:
        if opt.service in demands and opt.capacity_rps > 0:
            options_by_gpu[opt.gpu].append(opt)

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
    bound_sv = {
        sv: _replica_bound(problem.offers, demands[sv[0]], opts) for sv, opts in options_by_sv.items()
    }

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
            idx = add_var(_EPS_REPLICA, ub=bound_sv[(opt.service, opt.variant)])
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

    # u[s] = 1 when service s runs any replica on spot; only needed where spot over-provisioning is asked for.
    u_idx: dict[str, int] = {}
    for svc, demand in demands.items():
        if demand.spot_extra_rps > 0 and any(
            y_meta[i][0].market == "spot" for (_, _, s_, _), i in y_idx.items() if s_ == svc
        ):
            u_idx[svc] = add_var(0.0, ub=1.0)

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
        entries = [(i, y_meta[i][1].capacity_rps * (1 - y_meta[i][0].haircut)) for i in ys]
        if svc in u_idx:
            entries.append((u_idx[svc], -demand.spot_extra_rps))
            spot_ys = [i for i in ys if y_meta[i][0].market == "spot"]
            bound = sum(bound_sv[(y_meta[i][1].service, y_meta[i][1].variant)] for i in spot_ys)
            add_row([(i, 1.0) for i in spot_ys] + [(u_idx[svc], -float(bound))], -np.inf, 0.0)
        add_row(entries, demand.required_rps, np.inf)
        if any_zone_risk and demand.floor_rps > 0:
            add_row(
                [(i, y_meta[i][1].capacity_rps * y_meta[i][0].zone_share) for i in ys],
                demand.floor_rps,
                np.inf,
            )

    # One variant per service.
    if problem.single_variant:
        for svc, vars_ in variants_of.items():
            if len(vars_) <= 1:
                continue
            add_row([(z_idx[(svc, v)], 1.0) for v in vars_], 1.0, 1.0)
            for var in vars_:
                ys = [i for (_, _, s, v), i in y_idx.items() if s == svc and v == var]
                add_row([(i, 1.0) for i in ys] + [(z_idx[(svc, var)], -float(bound_sv[(svc, var)]))], -np.inf, 0.0)

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
        options={"time_limit": problem.time_limit_s, "mip_rel_gap": 1e-6, "disp": False},
    )
    stats["solve_seconds"] = round(time.perf_counter() - started, 4)
    stats["highs_status"] = int(result.status)
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
