"""Build the mixed-integer program of one `Problem` as sparse arrays for HiGHS.

Variables and rows are those of docs/cost-model.md#3-the-optimizer-optimizerpy: GPUs per (offer, layout), instances
per multi-GPU offer, replicas per (offer, slice profile, service, variant), one binary per (service, variant) when
a service has several, and m per spot group for the tiered spot rule (spot.py `spot_tiers`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from .milp_model import (
    WHOLE,
    Layout,
    Offer,
    Problem,
    ReplicaOption,
    SpotGroup,
    replica_bound,
    spot_group,
    spot_unit_capacity,
    useful_layouts,
)

# Tie-breakers, far below any real price difference (prices are >= $0.01/h): fewer GPUs, then fewer replicas.
EPS_GPU = 1e-6
EPS_REPLICA = 1e-8

GpuKey = tuple[str, Layout]  # (offer key, layout)
ReplicaKey = tuple[str, str, str, str]  # (offer key, slice profile, service, variant)


@dataclass
class Milp:
    """min cost @ x  s.t.  row_lb <= matrix @ x <= row_ub,  0 <= x <= col_ub,  x integer."""

    cost: list[float] = field(default_factory=list)
    col_lb: list[float] = field(default_factory=list)
    col_ub: list[float] = field(default_factory=list)
    gpu_cols: dict[GpuKey, int] = field(default_factory=dict)
    instance_cols: dict[str, int] = field(default_factory=dict)
    replica_cols: dict[ReplicaKey, int] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)  # False: a continuous column (a capacity, not a count)

    def add_var(self, cost: float, ub: float = np.inf, integer: bool = True, lb: float = 0.0) -> int:
        self.cost.append(cost)
        self.col_lb.append(lb)
        self.col_ub.append(ub)
        self.integer.append(integer)
        return len(self.cost) - 1

    def add_row(self, entries: Sequence[tuple[int, float]], lb: float, ub: float) -> None:
        row = len(self.row_lb)
        for col, value in entries:
            self.rows.append(row)
            self.cols.append(col)
            self.values.append(value)
        self.row_lb.append(lb)
        self.row_ub.append(ub)

    def matrix(self) -> csr_matrix:
        return coo_matrix((self.values, (self.rows, self.cols)), shape=(len(self.row_lb), len(self.cost))).tocsr()


class _Builder:
    """One pass over the problem: columns first (their order fixes HiGHS's path), then rows group by group."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.milp = Milp()
        self.offers = {o.key: o for o in problem.offers}
        self.demands = {d.service: d for d in problem.demands}
        self.options_by_gpu: dict[str, list[ReplicaOption]] = defaultdict(list)
        self.options_by_sv: dict[tuple[str, str], list[ReplicaOption]] = defaultdict(list)
        for opt in problem.options:
            if opt.service in self.demands and opt.capacity_rps > 0:
                self.options_by_gpu[opt.gpu].append(opt)
                self.options_by_sv[(opt.service, opt.variant)].append(opt)
        all_layouts: dict[str, list[Layout]] = defaultdict(list)
        for layout in problem.layouts:
            all_layouts[layout.gpu].append(layout)
        self.layouts_by_gpu = {
            gpu: useful_layouts(lays, {o.slice for o in self.options_by_gpu.get(gpu, [])})
            for gpu, lays in all_layouts.items()
        }
        self.units = spot_unit_capacity(problem, ("spot", "on_demand"))
        largest: dict[str, float] = defaultdict(float)
        for (svc, _, _, _), unit in self.units.items():
            largest[svc] = max(largest[svc], unit)
        # (most on-demand replicas, most spot replicas) of one service's variant in a cost-minimal solution
        self.bound_sv = {sv: replica_bound(problem.offers, self.demands[sv[0]], opts, largest[sv[0]])
                         for sv, opts in self.options_by_sv.items()}
        self.replica_meta: dict[int, tuple[Offer, ReplicaOption]] = {}
        self.variant_cols: dict[tuple[str, str], int] = {}
        self.group_cols: dict[SpotGroup, int] = {}
        self.replicas_of_group: dict[SpotGroup, list[int]] = defaultdict(list)
        self.variants_of: dict[str, list[str]] = defaultdict(list)

    # ---- columns ----------------------------------------------------------------------------------------------
    def gpu_and_replica_columns(self) -> None:
        milp, shares, fixed = self.milp, self.problem.slice_price_share, self.problem.fixed_replicas
        for offer in self.problem.offers:
            layouts = self.layouts_by_gpu.get(offer.gpu, [])
            if not layouts or not self.options_by_gpu.get(offer.gpu):
                continue
            # The relaxation buys instances GPU by GPU and MIG slices one by one (no MIG GPU columns).
            per_gpu_cost = offer.usd_per_gpu_hour if offer.gpus_per_instance == 1 or shares is not None else 0.0
            stock_ub = offer.stock_gpus if offer.stock_gpus is not None else np.inf
            for layout in layouts:
                if shares is not None and layout.is_mig:
                    continue
                # On a cost tie prefer the whole GPU: no MIG reconfiguration to run, no slice overhead.
                milp.gpu_cols[(offer.key, layout)] = milp.add_var(
                    per_gpu_cost + EPS_GPU * (2 if layout.is_mig else 1), ub=stock_ub)
            if offer.gpus_per_instance > 1 and shares is None:
                milp.instance_cols[offer.key] = milp.add_var(offer.usd_per_instance_hour)
            profiles = {p for layout in layouts for p in layout.slices}
            for opt in self.options_by_gpu[offer.gpu]:
                if opt.slice not in profiles or not self.problem.on_offer(opt, offer):
                    continue
                on_spot = offer.market == "spot"
                key = (offer.key, opt.slice, opt.service, opt.variant)
                cost = EPS_REPLICA
                if shares is not None and opt.slice != WHOLE:
                    cost += offer.usd_per_gpu_hour * shares[(offer.gpu, opt.slice)]
                upper = float(self.bound_sv[(opt.service, opt.variant)][on_spot])
                lower = 0.0
                if fixed is not None:
                    lower = upper = float(fixed.get(key, 0))
                col = milp.add_var(cost, ub=upper, lb=lower)
                milp.replica_cols[key] = col
                self.replica_meta[col] = (offer, opt)

    def variant_columns(self) -> str | None:
        """Binaries choosing one variant per service; returns why the problem is infeasible, if it plainly is."""
        # In column order, not a set's: a set of strings iterates in a per-process hash order, and the row order
        # decides which of several equal-cost plans HiGHS returns.
        for (svc, var) in dict.fromkeys((s, v) for (_, _, s, v) in self.milp.replica_cols):
            self.variants_of[svc].append(var)
        for svc in self.demands:
            if not self.variants_of.get(svc):
                return f"service {svc!r} has no replica option on any offered GPU"
        if self.problem.single_variant:
            for svc, variants in self.variants_of.items():
                if len(variants) > 1:
                    for var in sorted(variants):
                        self.variant_cols[(svc, var)] = self.milp.add_var(0.0, ub=1.0)
        return None

    def spot_group_columns(self) -> None:
        """m[g] >= (spot replicas of the group) / Z, integer: what one zone's loss can take (spot.py)."""
        for col, (offer, opt) in self.replica_meta.items():
            tier = self.demands[opt.service].spot_tier
            if tier is None or not tier.events or offer.market != "spot" or not tier.spot_counts:
                continue
            group = spot_group(offer, opt)
            self.replicas_of_group[group].append(col)
            if group not in self.group_cols:
                bound = self.bound_sv[(opt.service, opt.variant)][1]
                self.group_cols[group] = self.milp.add_var(0.0, ub=math.ceil(bound / tier.zones))

    # ---- rows -------------------------------------------------------------------------------------------------
    def slice_rows(self) -> None:
        """Slices exist: replicas on (offer, profile) <= that profile's slices on the offer's GPUs."""
        milp = self.milp
        by_offer_profile: dict[tuple[str, str], list[int]] = defaultdict(list)
        for (offer_key, profile, _, _), col in milp.replica_cols.items():
            by_offer_profile[(offer_key, profile)].append(col)
        for (offer_key, profile), cols in by_offer_profile.items():
            if self.problem.slice_price_share is not None and profile != WHOLE:
                continue  # the relaxation pays for each slice itself
            entries = [(col, 1.0) for col in cols]
            for layout in self.layouts_by_gpu[self.offers[offer_key].gpu]:
                if layout.count(profile):
                    entries.append((milp.gpu_cols[(offer_key, layout)], -float(layout.count(profile))))
            milp.add_row(entries, -np.inf, 0.0)

    def capacity_rows(self) -> None:
        """Capacity at the SLO after the spot haircut, and the floor after zone / instance losses."""
        milp, meta = self.milp, self.replica_meta
        by_service: dict[str, list[int]] = defaultdict(list)
        for (_, _, svc, _), col in milp.replica_cols.items():
            by_service[svc].append(col)
        any_zone_risk = any(o.zone_share < 1 for o in self.problem.offers)
        for svc, demand in self.demands.items():
            cols = by_service[svc]
            milp.add_row([(c, meta[c][1].capacity_rps * (1 - meta[c][0].haircut)) for c in cols],
                         demand.required_rps, np.inf)
            tier = demand.spot_tier
            spot_cols = [c for c in cols if meta[c][0].market == "spot"]
            if tier is None:
                if any_zone_risk and demand.floor_rps > 0:
                    milp.add_row([(c, meta[c][1].capacity_rps * meta[c][0].zone_share) for c in cols],
                                 demand.floor_rps, np.inf)
                continue
            if tier.on_demand_fails and tier.events is not None:
                self._failing_on_demand_rows(svc, demand, cols)
                continue
            if not spot_cols:
                continue  # on-demand only: the capacity row already carries peak x (1 + headroom) >= the floor
            # spot counts in full here; the m terms take off what k zone / instance losses can take away
            entries = [(c, meta[c][1].capacity_rps) for c in cols if tier.events or meta[c][0].market != "spot"]
            for group, group_col in self.group_cols.items():
                if group[0] == svc:
                    entries.append((group_col, -(tier.events or 0) * self.units[group]))
            if demand.floor_rps > 0:
                milp.add_row(entries, demand.floor_rps, np.inf)
            if tier.max_spot_replicas is not None:
                milp.add_row([(c, 1.0) for c in spot_cols], -np.inf, float(tier.max_spot_replicas))
        for group, group_col in self.group_cols.items():
            tier = self.demands[group[0]].spot_tier
            assert tier is not None and tier.events
            cols = self.replicas_of_group[group]
            milp.add_row([(c, -1.0) for c in cols] + [(group_col, float(tier.zones))], 0.0, np.inf)
            # Each spot group carries its own worst-case loss (its floor-row contribution is >= 0): spot whose
            # instance holds far more than one replica (a MIG GPU, an 8-GPU instance) cannot be bare headroom.
            milp.add_row([(c, meta[c][1].capacity_rps) for c in cols]
                         + [(group_col, -tier.events * self.units[group])], 0.0, np.inf)

    def _failing_on_demand_rows(self, svc: str, demand, cols: list[int]) -> None:
        """A tier under which on-demand instances fail too (spot.py): one loss variable L >= what one event can take
        (a zone's spot content: sum_g u_g m_g over the spot groups, when spot counts; one on-demand instance: u_h y_h
        for each on-demand group h the service uses, y_h binary); the floor row on-demand (+ spot) - k L >= peak;
        and at most n_k instances that can fail (on-demand, + spot when it counts)."""
        milp, meta = self.milp, self.replica_meta
        tier = demand.spot_tier
        k = tier.events
        counted = [c for c in cols if tier.spot_counts or meta[c][0].market != "spot"]
        entries = [(c, meta[c][1].capacity_rps) for c in counted]
        if k:
            loss = milp.add_var(0.0, ub=np.inf, integer=False)
            entries.append((loss, -float(k)))
            spot_groups = [(col, self.units[g]) for g, col in self.group_cols.items() if g[0] == svc]
            if spot_groups:
                milp.add_row([(loss, 1.0)] + [(col, -unit) for col, unit in spot_groups], 0.0, np.inf)
            if demand.on_demand_loss_rps is not None:
                # The constant stands for every on-demand group: one binary says whether the service has any
                # on-demand replica at all (a service on spot alone loses no on-demand instance).
                on_demand_cols = [c for c in cols if meta[c][0].market != "spot"]
                if on_demand_cols:
                    any_used = milp.add_var(0.0, ub=1.0)
                    most = float(sum(self.bound_sv[(svc, variant)][0] for (s, variant) in self.bound_sv if s == svc))
                    milp.add_row([(c, 1.0) for c in on_demand_cols] + [(any_used, -most)], -np.inf, 0.0)
                    milp.add_row([(loss, 1.0), (any_used, -demand.on_demand_loss_rps)], 0.0, np.inf)
                cols = []
            on_demand: dict[SpotGroup, list[int]] = defaultdict(list)
            for c in cols:
                offer, opt = meta[c]
                if offer.market != "spot":
                    on_demand[spot_group(offer, opt)].append(c)
            for group, group_cols in on_demand.items():
                used = milp.add_var(0.0, ub=1.0)
                bound = float(self.bound_sv[(group[0], group[2])][0])
                milp.add_row([(c, 1.0) for c in group_cols] + [(used, -bound)], -np.inf, 0.0)
                milp.add_row([(loss, 1.0), (used, -self.units[group])], 0.0, np.inf)
        if demand.floor_rps > 0:
            milp.add_row(entries, demand.floor_rps, np.inf)
        if tier.max_spot_replicas is not None:
            failing = [c for c in counted if meta[c][0].market != "spot" or tier.events]
            milp.add_row([(c, 1.0) for c in failing], -np.inf, float(tier.max_spot_replicas))

    def single_variant_rows(self) -> None:
        if not self.problem.single_variant:
            return
        milp, meta = self.milp, self.replica_meta
        by_sv: dict[tuple[str, str], list[int]] = defaultdict(list)
        for (_, _, svc, var), col in milp.replica_cols.items():
            by_sv[(svc, var)].append(col)
        for svc, variants in self.variants_of.items():
            if len(variants) <= 1:
                continue
            milp.add_row([(self.variant_cols[(svc, v)], 1.0) for v in variants], 1.0, 1.0)
            for var in variants:
                for on_spot in (False, True):
                    cols = [c for c in by_sv[(svc, var)] if (meta[c][0].market == "spot") == on_spot]
                    if cols:
                        bound = float(self.bound_sv[(svc, var)][on_spot])
                        milp.add_row([(c, 1.0) for c in cols] + [(self.variant_cols[(svc, var)], -bound)],
                                     -np.inf, 0.0)

    def instance_and_quota_rows(self) -> None:
        milp = self.milp
        # Whole instances.
        for offer_key, col in milp.instance_cols.items():
            per_instance = self.offers[offer_key].gpus_per_instance
            milp.add_row([(col, float(per_instance))]
                         + [(c, -1.0) for (o, _), c in milp.gpu_cols.items() if o == offer_key], 0.0, np.inf)
        # Quotas per GPU type (in GPUs; an instance counts all its GPUs).
        for gpu, quota in self.problem.quotas.items():
            entries: list[tuple[int, float]] = []
            for offer in self.problem.offers:
                if offer.gpu != gpu:
                    continue
                if offer.key in milp.instance_cols:
                    entries.append((milp.instance_cols[offer.key], float(offer.gpus_per_instance)))
                else:
                    entries += [(c, 1.0) for (o, _), c in milp.gpu_cols.items() if o == offer.key]
            if entries:
                milp.add_row(entries, -np.inf, float(quota))
        # Fleet stock per pool.
        for offer in self.problem.offers:
            if offer.stock_gpus is None:
                continue
            entries = [(c, 1.0) for (o, _), c in milp.gpu_cols.items() if o == offer.key]
            if len(entries) > 1:
                milp.add_row(entries, -np.inf, float(offer.stock_gpus))


def build_milp(problem: Problem) -> Milp | str:
    """The MILP of `problem`, or a sentence saying why it plainly has no solution."""
    builder = _Builder(problem)
    builder.gpu_and_replica_columns()
    reason = builder.variant_columns()
    if reason is not None:
        return reason
    builder.spot_group_columns()
    builder.slice_rows()
    builder.capacity_rows()
    builder.single_variant_rows()
    builder.instance_and_quota_rows()
    return builder.milp
