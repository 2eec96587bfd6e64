"""`make_plan`: workload + profiles + manifests + catalogs -> Plan. Assembles the replica options (options.py), the
offers (offers.py), the MILP (optimizer.py), the spot availability check (spot.py) and the explanations
(explain.py). No file I/O: the CLI loads inputs and writes outputs."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vlmopt.hw import mig
from vlmopt.hw.models import ModelArch, load_model_arch
from vlmopt.schemas.catalog import GpuCatalog, GpuSpec, PriceCatalog
from vlmopt.schemas.common import ContractError, Provenance, utc_now_iso
from vlmopt.schemas.inventory import GpuInventory
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.plan import (
    Baseline,
    Candidate,
    GpuAssignment,
    NodeGroup,
    Plan,
    Replica,
    ServicePlan,
)
from vlmopt.schemas.profile import BenchmarkProfile
from vlmopt.schemas.workload import Service, Workload

from . import explain, options, perf, spot
from .errors import PlanInfeasible, PlanInputError
from .offers import OfferInfo, cloud_offers, fleet_offers
from .optimizer import WHOLE, Demand, Layout, Offer, Problem, ReplicaOption, Solution, lay_out_gpus, solve
from .variants import VariantChoice, default_variants, find_manifest, select_variants, variants_from_manifest

ALL_LEVERS = frozenset(explain.LEVER_ORDER)
# Solves per lever set: the tiered MILP, one more if a service filled its tier's spot limit, one safety net.
MAX_AVAILABILITY_ROUNDS = 3
# Above this many services the option list is pruned before the MILP (see `_prune`); below it the MILP sees every
# option and its answer is exactly optimal (tests/unit/test_plan_optimizer.py checks that against brute force).
PRUNE_ABOVE_SERVICES = 8
# Tuned on the scaling benchmark's instance (scripts/bench_planner_scaling.py, docs/plan.md): keeping more options
# (or variants) per service made the MILP much slower for little gain; keeping fewer made plans dearer.
PRUNE_KEEP_PER_VARIANT = 4
PRUNE_VARIANT_SLACK = 0.10
# On such pruned (already heuristic) problems HiGHS may stop within 1 % of its lower bound, and after a few
# seconds with the best plan found; the plan's solver stats give the gap reached. Small problems solve to 1e-6.
LARGE_MIP_REL_GAP = 0.01
LARGE_TIME_LIMIT_S = 2.5
ATTRIBUTION_TIME_LIMIT_S = 1.0


@dataclass
class ServiceContext:
    index: int
    service: Service
    arch: ModelArch
    variants: list[VariantChoice]
    excluded: dict[str, str]
    demand_rps: float  # peak after the response cache
    manifest: str | None


@dataclass
class Context:
    workload: Workload
    services: list[ServiceContext]
    gpus: dict[str, GpuSpec]
    offers: list[OfferInfo]
    layouts: list[Layout]
    evals: list[options.OptionEval]
    efficiency: perf.Efficiency
    availability_target: float
    inputs: list[Provenance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _where(ctx_index: int) -> str:
    return f"services[{ctx_index}]"


def _resolve_service(
    i: int, service: Service, manifests: Mapping[str, VariantManifest], arch_loader: Callable[[str], ModelArch]
) -> ServiceContext:
    where = _where(i)
    found = find_manifest(service, manifests)
    if service.manifest is not None and found is None:
        raise PlanInputError(f"{where}.manifest: {service.manifest} was not loaded (pass it with --manifest)")
    arch = None
    errors = []
    for ref in [service.model] + ([found[1].base_model] if found else []):
        try:
            arch = arch_loader(ref)
            break
        except (ContractError, OSError) as exc:
            errors.append(str(exc))
    if arch is None:
        raise PlanInputError(f"{where}.model: {errors[0]}")
    available = variants_from_manifest(*found) if found else default_variants(arch.name, arch.hf_id)
    variants, excluded = select_variants(service, where, available)
    return ServiceContext(
        i, service, arch, variants, excluded, service.peak_rps * (1 - service.response_cache_hit_rate),
        found[0] if found else None,
    )


def _layouts(gpu: GpuSpec, allow_mig: bool) -> list[Layout]:
    out = [Layout(gpu.id, (WHOLE,))]
    if not allow_mig or gpu.mig is None:
        return out
    total = gpu.mig.compute_slices
    for lay in mig.enumerate_layouts(gpu, maximal_only=True):
        if len(lay.profiles) == 1 and gpu.mig_profile(lay.profiles[0]).compute_slices == total:
            continue  # the full-GPU instance is the whole GPU with MIG overhead
        out.append(Layout(gpu.id, tuple(lay.profiles), tuple(lay.starts)))
    return out


def _fit_efficiency(
    profiles: Mapping[str, BenchmarkProfile],
    gpus: dict[str, GpuSpec],
    arch_loader: Callable[[str], ModelArch],
    services: list[ServiceContext],
) -> tuple[perf.Efficiency, list[str]]:
    """Observations from every measured profile on a catalog GPU whose model architecture is known."""
    obs: list[perf.Observation] = []
    used = 0
    notes = []
    known_variants = {(sc.arch.name, v.name): (sc.arch, v) for sc in services for v in sc.variants}
    for source, p in profiles.items():
        if p.device.catalog_id not in gpus:
            notes.append(f"profile {source}: measured on {p.device.name} (not in the device catalog); not used")
            continue
        gpu = gpus[p.device.catalog_id]
        arch = variant = None
        for (_, vname), (a, v) in known_variants.items():
            if vname == p.variant and (p.model in (a.name, a.hf_id) or options.profile_model_names(p) & {a.name}):
                arch, variant = a, v
                break
        if arch is None:
            try:
                arch = arch_loader(p.model)
            except (ContractError, OSError):
                notes.append(f"profile {source}: model {p.model!r} has no known architecture; not used")
                continue
            variant = VariantChoice(p.variant, p.variant_method, p.variant_scheme, p.model, None, None, 0, 1,
                                    Provenance(kind="measured", source=source))
        slice_name = p.device.mig_profile or WHOLE
        try:
            share, _ = options.share_of(gpu, slice_name)
        except KeyError:
            notes.append(f"profile {source}: {gpu.id} has no MIG profile {slice_name}; not used")
            continue
        w = p.workload
        shape = options.request_shape(arch, w.input_tokens or 1, w.output_tokens or 1, w.images_per_request,
                                      tuple(w.image_sizes[0]) if w.image_sizes else (448, 448))
        args = p.engine.server_args
        max_batch = float((args.max_num_seqs if args and args.max_num_seqs else None) or options.MAX_NUM_SEQS_CAP)
        found = perf.observations_from_profile(p, options.model_cost(arch, variant, gpu), shape, share, max_batch)
        if found:
            used += 1
            obs += found
    return perf.fit_efficiency(obs, profiles=used), notes


def _memoised(loader: Callable[[str], ModelArch]) -> Callable[[str], ModelArch]:
    loaded: dict[str, ModelArch] = {}

    def load(ref: str) -> ModelArch:
        if ref not in loaded:
            loaded[ref] = loader(ref)
        return loaded[ref]

    return load


def build_context(
    workload: Workload,
    profiles: Mapping[str, BenchmarkProfile],
    manifests: Mapping[str, VariantManifest],
    gpu_catalog: GpuCatalog,
    price_catalog: PriceCatalog | None,
    mode: str,
    inventory: GpuInventory | None,
    availability: float | None,
    prices_path: str,
    arch_loader: Callable[[str], ModelArch],
) -> Context:
    c = workload.constraints
    gpus = {g.id: g for g in gpu_catalog.gpus}
    for field_name, ids in (("constraints.gpus", c.gpus or []), ("constraints.max_gpus", list(c.max_gpus))):
        unknown = [g for g in ids if g not in gpus]
        if unknown:
            raise PlanInputError(f"{field_name}: unknown GPU(s) {unknown}; the GPU catalog has {sorted(gpus)}")
    for i, s in enumerate(workload.services):
        if not s.slo.as_dict():
            raise PlanInputError(f"{_where(i)}.slo: set at least one latency objective ({', '.join(perf.SLO_KEYS)})")
    names = [s.name for s in workload.services]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PlanInputError(f"services: duplicate service name(s) {dupes}")
    arch_loader = _memoised(arch_loader)  # services of one model share one architecture (and its parsed file)
    services = [_resolve_service(i, s, manifests, arch_loader) for i, s in enumerate(workload.services)]

    if mode == "cloud":
        if price_catalog is None:
            raise PlanInputError("prices: cloud mode needs a price catalog")
        offer_infos = cloud_offers(price_catalog, gpu_catalog, c, prices_path)
    elif mode == "fleet":
        if inventory is None:
            raise PlanInputError("inventory: fleet mode needs an inventory (--inventory nvml|FILE)")
        offer_infos = fleet_offers(inventory, gpu_catalog, price_catalog, c, prices_path)
    else:
        raise PlanInputError(f"mode: must be 'cloud' or 'fleet', got {mode!r}")
    if not offer_infos:
        raise PlanInfeasible(
            f"no GPU is on offer: the {'price catalog' if mode == 'cloud' else 'inventory'} has no row for the "
            f"allowed GPUs {c.gpus or 'any'}, clouds {c.clouds or 'any'} and markets {c.markets}"
        )
    offered = sorted({o.offer.gpu for o in offer_infos})
    layouts = [lay for g in offered for lay in _layouts(gpus[g], c.allow_mig)]

    efficiency, notes = _fit_efficiency(profiles, gpus, arch_loader, services)
    measured = options.index_profiles(profiles, set(gpus))
    slices_of = {g: sorted({s for lay in layouts if lay.gpu == g for s in lay.slices}) for g in offered}
    requests = []
    for sc in services:
        model_names = {sc.service.model, sc.arch.name, sc.arch.hf_id}
        for v in sc.variants:
            for g in offered:
                for s in slices_of[g]:
                    matching = [
                        (src, p) for src, p in measured.get((v.name, g, s), [])
                        if options.profile_model_names(p) & model_names or (sc.manifest and p.manifest == sc.manifest)
                    ]
                    requests.append(options.OptionRequest(sc.service, sc.arch, v, gpus[g], s, matching))
    evals = options.evaluate_options(requests, efficiency)
    target = availability if availability is not None else c.availability
    if not 0 < target < 1:
        raise PlanInputError(f"availability: must be in (0, 1), got {target}")
    ctx = Context(workload, services, gpus, offer_infos, layouts, evals, efficiency, target, notes=notes)
    ctx.inputs = _inputs(ctx, profiles, gpu_catalog, prices_path if mode == "cloud" else None)
    return ctx


def _inputs(ctx: Context, profiles: Mapping[str, BenchmarkProfile], catalog: GpuCatalog, prices: str | None):
    out = [Provenance(kind="user", source=f"workload {ctx.workload.name}")]
    out.append(Provenance(kind="catalog", source="GPU catalog (profiles/gpus.yaml)",
                          detail=f"{len(catalog.gpus)} GPUs, every figure sourced in the file"))
    if prices:
        dates = sorted({o.provenance.date or "" for o in ctx.offers})
        out.append(Provenance(kind="catalog", source=prices, date=dates[-1] if dates else None,
                              detail=f"{len(ctx.offers)} offers used"))
    for src, p in profiles.items():
        out.append(Provenance(kind="measured", source=src, date=p.finished or p.started or None,
                              detail=f"{p.variant} on {p.device.slug()}"))
    eff = ctx.efficiency
    err = f", latency MAPE {eff.mape:.1%} (prior {eff.mape_prior:.1%})" if eff.mape is not None else ""
    out.append(Provenance(kind="estimated", source="vlmopt roofline performance model",
                          detail=f"{eff.source}: bandwidth x{eff.bandwidth:.3f}, compute x{eff.compute:.3f}{err}"))
    for sc in ctx.services:
        for v in sc.variants:
            out.append(v.fidelity_provenance.model_copy(update={"detail": f"fidelity of {sc.service.name}/{v.name}"}))
    return out


# ---- infeasibility, in words -----------------------------------------------------------------------------------
def diagnose(ctx: Context) -> None:
    """Raise PlanInfeasible naming the first constraint no option can meet, service by service."""
    c = ctx.workload.constraints
    evals_of: dict[str, list[options.OptionEval]] = defaultdict(list)
    for e in ctx.evals:
        evals_of[e.service].append(e)
    for sc in ctx.services:
        s, where = sc.service, _where(sc.index)
        if not sc.variants:
            detail = "; ".join(f"{k}: {v}" for k, v in sc.excluded.items())
            raise PlanInfeasible(f"{where}.quality: no variant of {sc.arch.name} meets the quality floor ({detail})")
        mine = evals_of[s.name]
        fitting = [e for e in mine if e.fit.fits]
        if not fitting:
            smallest = min(sc.variants, key=lambda v: options.memory.weight_bytes(sc.arch, v.scheme, v.bytes_on_disk))
            largest = max((ctx.gpus[e.gpu] for e in mine), key=lambda g: g.memory_gib)
            fit = next(e.fit for e in mine if e.gpu == largest.id and e.slice == WHOLE and e.variant == smallest.name)
            allowed = "allowed " if c.gpus else ""
            raise PlanInfeasible(
                f"no GPU in the {allowed}catalog fits {sc.arch.name} {smallest.name} at max_model_len "
                f"{s.max_model_len} on one device (largest offered: {largest.id}: {fit.reason}); "
                f"lower {where}.max_model_len, allow a smaller variant, or offer a larger GPU"
            )
        if not any(e.usable for e in fitting):
            slo = s.slo.as_dict()
            best: dict[str, float] = {}
            for e in fitting:
                idle = e.capacity.at_zero_load
                if idle is None:
                    continue
                for k in slo:
                    best[k] = min(best.get(k, math.inf), idle.value(k))
            failing = [k for k in slo if best.get(k, math.inf) > slo[k]]
            key = failing[0] if failing else next(iter(slo))
            reached = best.get(key)
            reached_txt = f"{reached:.0f} ms" if reached is not None and math.isfinite(reached) else "nothing"
            raise PlanInfeasible(
                f"{where}.slo.{key} = {slo[key]:g} ms is below what any option reaches: the best predicted "
                f"{key} at zero load is {reached_txt} ({len(fitting)} fitting options of variant x GPU x slice)"
            )


def _explain_milp_failure(ctx: Context, levers: frozenset[str]) -> str:
    """Name the binding constraint of an infeasible MILP by re-solving with one constraint group relaxed."""
    c = ctx.workload.constraints
    if c.max_gpus:
        relaxed = solve(_problem(ctx, levers, {}, quotas=False))  # without spot tiers: a looser problem
        if relaxed.ok:
            used = defaultdict(int)
            for (okey, _), n in relaxed.gpus.items():
                used[next(o.offer.gpu for o in ctx.offers if o.offer.key == okey)] += n
            over = {g: used[g] for g, q in c.max_gpus.items() if used[g] > q}
            return (f"constraints.max_gpus: the quota {dict(c.max_gpus)} is too small; without it the plan uses "
                    f"{dict(over) or dict(used)} GPUs")
    stocks = [o.offer for o in ctx.offers if o.offer.stock_gpus is not None]
    if stocks:
        have = {o.gpu: o.stock_gpus for o in stocks}
        return f"inventory: the fleet's GPUs {have} cannot carry the peak load at the SLO"
    return "the capacity, zone-loss and single-variant constraints cannot all be met with the offered GPUs"


# ---- the MILP for a set of levers --------------------------------------------------------------------------------
def _problem(
    ctx: Context,
    levers: frozenset[str],
    tiers: Mapping[str, spot.SpotTier],
    quotas: bool = True,
    time_limit_s: float | None = None,
) -> Problem:
    c = ctx.workload.constraints
    offers = [o.offer for o in ctx.offers if "spot" in levers or o.offer.market != "spot"]
    layouts = [lay for lay in ctx.layouts if "mig_packing" in levers or not lay.is_mig]
    baseline_only = "quantization" not in levers
    variant_scheme = {(sc.service.name, v.name): v.scheme for sc in ctx.services for v in sc.variants}
    opts = [
        ReplicaOption(e.service, e.variant, e.gpu, e.slice, e.capacity.capacity_rps)
        for e in ctx.evals
        if e.usable and not (baseline_only and variant_scheme[(e.service, e.variant)] != "BF16")
        and (e.slice == WHOLE or "mig_packing" in levers)
    ]
    if len(ctx.services) > PRUNE_ABOVE_SERVICES:
        opts = _prune(ctx, opts, offers, layouts, tiers)
    demands = [
        Demand(sc.service.name, sc.demand_rps * (1 + c.headroom), sc.demand_rps, tiers.get(sc.service.name))
        for sc in ctx.services
    ]
    problem = Problem(offers, layouts, opts, demands, quotas=dict(c.max_gpus) if quotas else {})
    if len(ctx.services) > PRUNE_ABOVE_SERVICES:
        problem.mip_rel_gap = LARGE_MIP_REL_GAP
        problem.time_limit_s = LARGE_TIME_LIMIT_S
    if time_limit_s is not None:
        problem.time_limit_s = min(problem.time_limit_s, time_limit_s)
    return problem


def _cheapest_by_size(
    group: list[ReplicaOption], price: Callable[[ReplicaOption], float], required_rps: float
) -> list[ReplicaOption]:
    """The options no other option beats on both price per replica and capacity, from the cheapest up to the
    first one that alone carries the service: what a small service picks from, whatever its $/h per req/s."""
    out: list[ReplicaOption] = []
    largest = -1.0
    for opt in sorted(group, key=lambda o: (price(o), -o.capacity_rps)):
        if opt.capacity_rps > largest + 1e-12 and math.isfinite(price(opt)):
            out.append(opt)
            largest = opt.capacity_rps
            if largest >= required_rps:
                break
    return out


def _prune(
    ctx: Context,
    opts: list[ReplicaOption],
    offers: list[Offer],
    layouts: list[Layout],
    tiers: Mapping[str, spot.SpotTier],
) -> list[ReplicaOption]:
    """Heuristic for large workloads: per service keep the variants whose best $/h per req/s (GPU price x slice
    share / capacity) is within 10 % of the service's best. Per (service, variant, market) keep the 4 most
    cost-efficient (GPU, slice) options (what big services pack onto), the cheap-and-big-enough frontier
    (`_cheapest_by_size`: what small services fit in), and on spot the 4 most cost-efficient per req/s that survives
    the service's spot tier (capacity minus k/Z of the most one instance can hold: what the availability rule counts;
    small MIG slices of a big GPU count little there). Exactness is traded for solve time; the plan's solver stats
    say so."""
    price: dict[tuple[str, str], float] = {}
    for o in offers:
        key = (o.gpu, o.market)
        price[key] = min(price.get(key, math.inf), o.usd_per_gpu_hour)
    gpi = {o.gpu: o.gpus_per_instance for o in offers if o.market == "spot"}
    markets = sorted({o.market for o in offers})
    share = {}
    for opt in opts:
        if (opt.gpu, opt.slice) not in share:
            gpu = ctx.gpus[opt.gpu]
            share[(opt.gpu, opt.slice)] = (1.0 if opt.slice == WHOLE else
                                           gpu.mig_profile(opt.slice).compute_slices / gpu.mig.compute_slices)

    def efficiency(opt: ReplicaOption, market: str) -> float:
        return price.get((opt.gpu, market), math.inf) * share[(opt.gpu, opt.slice)] / opt.capacity_rps

    by_sv: dict[tuple[str, str], list[ReplicaOption]] = defaultdict(list)
    for opt in opts:
        by_sv[(opt.service, opt.variant)].append(opt)
    demand_of = {sc.service.name: sc.demand_rps * (1 + ctx.workload.constraints.headroom) for sc in ctx.services}
    slices_of: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for lay in layouts:
        slices_of[lay.gpu].append(lay.slices)

    def instance_capacity(group: list[ReplicaOption]) -> dict[str, float]:
        cap = {(o.gpu, o.slice): o.capacity_rps for o in group}
        return {g: gpi.get(g, 1) * max(sum(cap.get((g, p), 0.0) for p in sl) for sl in slices_of[g])
                for g in {o.gpu for o in group}}

    best_of_variant = {sv: min(efficiency(o, m) for o in group for m in markets) for sv, group in by_sv.items()}
    best_of_service: dict[str, float] = defaultdict(lambda: math.inf)
    for (svc, _), value in best_of_variant.items():
        best_of_service[svc] = min(best_of_service[svc], value)
    kept: set[ReplicaOption] = set()
    for (svc, var), group in by_sv.items():
        if best_of_variant[(svc, var)] > best_of_service[svc] * (1 + PRUNE_VARIANT_SLACK):
            continue
        for market in markets:
            kept.update(sorted(group, key=lambda o, m=market: efficiency(o, m))[:PRUNE_KEEP_PER_VARIANT])
            kept.update(_cheapest_by_size(group, lambda o, m=market: efficiency(o, m) * o.capacity_rps,
                                          demand_of[svc]))
        tier = tiers.get(svc)
        if "spot" in markets and tier is not None and tier.events:
            unit = instance_capacity(group)
            ratio = tier.events / tier.zones

            def survives(o: ReplicaOption, unit=unit, ratio=ratio) -> float:
                left = o.capacity_rps - ratio * unit[o.gpu]
                return price.get((o.gpu, "spot"), math.inf) * share[(o.gpu, o.slice)] / left if left > 0 else math.inf

            ranked = sorted((o for o in group if math.isfinite(survives(o))), key=survives)
            kept.update(ranked[:PRUNE_KEEP_PER_VARIANT])
    return [o for o in opts if o in kept]


@dataclass
class Solved:
    problem: Problem
    solution: Solution
    availability: dict[str, float]
    rounds: int
    tiers: dict[str, spot.SpotTier] = field(default_factory=dict)


def _service_availability(ctx: Context, problem: Problem, solution: Solution) -> dict[str, float]:
    """P(capacity >= peak) per service, spot instances (all their GPUs) failing together."""
    offers = {o.offer.key: o for o in ctx.offers}
    caps = {(e.service, e.variant, e.gpu, e.slice): e.capacity.capacity_rps for e in ctx.evals}
    od: dict[str, float] = defaultdict(float)
    units: dict[str, list[float]] = defaultdict(list)
    rates = []
    for placed, count in lay_out_gpus(problem, solution):
        info = offers[placed.offer]
        per_gpu: dict[str, float] = defaultdict(float)
        for slice_name, svc, var, _ in placed.assignment:
            per_gpu[svc] += caps[(svc, var, info.offer.gpu, slice_name)]
        for svc, cap in per_gpu.items():
            if info.offer.market == "spot":
                # Instances fail whole; GPUs of one instance are counted together where the instance holds several.
                gpi = info.offer.gpus_per_instance
                full, rest = divmod(count, gpi)
                units[svc] += [cap * gpi] * full + ([cap * rest] if rest else [])
                rates.append(info.interruption_rate_per_hour)
            else:
                od[svc] += cap * count
    assumptions = ctx.workload.constraints.spot
    p_rep = max((spot.replica_unavailability(assumptions, r) for r in rates), default=0.0)
    return {
        sc.service.name: spot.availability(od[sc.service.name], units[sc.service.name], sc.demand_rps,
                                           assumptions, p_rep)
        for sc in ctx.services
    }


def _spot_tiers(ctx: Context) -> list[spot.SpotTier]:
    """The spot tiers every service may use (spot.spot_tiers), at the worst interruption rate on offer."""
    rates = [o.interruption_rate_per_hour for o in ctx.offers if o.offer.market == "spot"]
    assumptions = ctx.workload.constraints.spot
    p_rep = max((spot.replica_unavailability(assumptions, r) for r in rates), default=0.0)
    return spot.spot_tiers(ctx.availability_target, assumptions, p_rep)


def _spot_replicas(solution: Solution, problem: Problem) -> dict[str, int]:
    market = {o.key: o.market for o in problem.offers}
    out: dict[str, int] = defaultdict(int)
    for (okey, _, svc, _), n in solution.replicas.items():
        if market[okey] == "spot":
            out[svc] += n
    return out


def solve_levers(ctx: Context, levers: frozenset[str], time_limit_s: float | None = None) -> Solved | None:
    """Optimal plan with these levers, its availability guaranteed by the MILP itself (spot tiers, spot.py).

    Round 1 gives every service the least conservative tier. Round 2, only if some service filled its tier's spot
    replica limit: those services move to the next tier (more spot replicas allowed, each counting less), and the
    cheaper of the two plans is kept (both meet the target). A last round would move any service the exact check
    still finds short to on-demand carrying its peak; the tiers' proof (spot.spot_tiers, checked on random fleets in
    tests/unit/test_plan_spot.py) says it never runs. So at most MAX_AVAILABILITY_ROUNDS solves."""
    tiers = _spot_tiers(ctx) if "spot" in levers else []
    level = {sc.service.name: 0 for sc in ctx.services}

    def attempt(rounds: int) -> Solved | None:
        assigned = {svc: tiers[i] for svc, i in level.items()} if tiers else {}
        problem = _problem(ctx, levers, assigned, time_limit_s=time_limit_s)
        solution = solve(problem)
        if not solution.has_plan:
            return None
        return Solved(problem, solution, _service_availability(ctx, problem, solution), rounds, assigned)

    best = attempt(1)
    if best is None or not tiers:
        return best
    rounds = 1
    used = _spot_replicas(best.solution, best.problem)
    capped = [svc for svc, i in level.items()
              if tiers[i].max_spot_replicas is not None and used.get(svc, 0) >= tiers[i].max_spot_replicas]
    if capped:
        for svc in capped:
            level[svc] += 1
        rounds += 1
        other = attempt(rounds)
        if other is not None and other.solution.usd_per_hour < best.solution.usd_per_hour - 1e-9:
            best = other
    short = [s for s, a in best.availability.items() if a < ctx.availability_target]
    if short:
        for svc in short:
            level[svc] = len(tiers) - 1
        rounds += 1
        best = attempt(rounds) or best
    best.rounds = rounds
    return best


# ---- assembling the Plan -----------------------------------------------------------------------------------------
def _node_groups(ctx: Context, solved: Solved) -> list[NodeGroup]:
    offers = {o.offer.key: o for o in ctx.offers}
    evals = {(e.service, e.variant, e.gpu, e.slice): e for e in ctx.evals}
    placed = lay_out_gpus(solved.problem, solved.solution)
    used: dict[str, int] = defaultdict(int)
    largest: dict[str, object] = {}
    for p, n in placed:
        used[p.offer] += n
        if p.offer not in largest or n > dict(placed)[largest[p.offer]]:
            largest[p.offer] = p
    groups: list[NodeGroup] = []
    counter: dict[str, int] = defaultdict(int)
    for p, n in placed:
        info = offers[p.offer]
        offer = info.offer
        gpu = ctx.gpus[offer.gpu]
        bought = solved.solution.instances[p.offer] * offer.gpus_per_instance
        if largest[p.offer] is p:
            n += bought - used[p.offer]  # idle GPUs of a bought instance run more replicas, for free
        price_per_gpu = offer.usd_per_instance_hour * solved.solution.instances[p.offer] / bought
        replicas = []
        order = list(range(len(p.assignment)))
        layout_names: list[str] | None = None
        placements: list[int] | None = None
        if p.layout.is_mig:
            checked = mig.validate_layout(gpu, list(p.layout.slices), list(p.layout.starts or ()) or None)
            created = checked.creation_order()
            layout_names = [name for name, _ in created]
            placements = [start for _, start in created]
            remaining = list(enumerate(p.assignment))
            order = []
            for name, start in created:
                k = next(i for i, a in remaining if a[0] == name and (a[3] is None or a[3] == start))
                remaining = [(i, a) for i, a in remaining if i != k]
                order.append(k)
            starts = dict(zip(order, placements, strict=True))
        for k in order:
            slice_name, svc, var, _ = p.assignment[k]
            e = evals[(svc, var, offer.gpu, slice_name)]
            replicas.append(
                Replica(
                    service=svc,
                    variant=var,
                    slice=slice_name,
                    mig_start=starts[k] if p.layout.is_mig else None,
                    server_args=e.server_args,
                    capacity_rps=round(e.capacity.capacity_rps, 6),
                    capacity_provenance=e.capacity.provenance,
                    kv_token_capacity=e.fit.kv_token_capacity,
                    memory_gib=e.fit.breakdown(),
                )
            )
        gpi = offer.gpus_per_instance
        whole, rest = divmod(n, gpi)
        shape = [(whole, gpi)] if whole else []
        if rest:
            shape.append((1, rest))  # part of an instance whose other GPUs run another layout
        for instances, gpus_per_instance in shape:
            counter[offer.gpu] += 1
            groups.append(
                NodeGroup(
                    name=f"{offer.gpu}-{offer.market.replace('_', '-')}-{counter[offer.gpu]}",
                    gpu=offer.gpu,
                    cloud=info.cloud,
                    region=info.region,
                    instance_type=info.instance_type,
                    market=offer.market,
                    gpus_per_instance=gpus_per_instance,
                    instances=instances,
                    gpu_layout=GpuAssignment(mig_layout=layout_names, mig_placements=placements, replicas=replicas),
                    usd_per_hour=round(price_per_gpu * instances * gpus_per_instance, 6),
                    price_provenance=info.provenance,
                )
            )
    return groups


def _costs(ctx: Context, groups: list[NodeGroup]):
    od_price = {}
    for o in ctx.offers:
        if o.offer.market == "on_demand":
            od_price[o.offer.gpu] = min(od_price.get(o.offer.gpu, math.inf), o.offer.usd_per_gpu_hour)
    od = sum(g.usd_per_hour for g in groups if g.market == "on_demand")
    sp = sum(g.usd_per_hour for g in groups if g.market == "spot")
    fallback = 0.0
    for g in groups:
        if g.market == "spot":
            gpus = g.instances * g.gpus_per_instance
            fallback += gpus * od_price.get(g.gpu, g.usd_per_hour / max(gpus, 1))
    rates = [o.interruption_rate_per_hour for o in ctx.offers if o.offer.market == "spot"]
    p_rep = max((spot.replica_unavailability(ctx.workload.constraints.spot, r) for r in rates), default=0.0)
    priced = spot.spot_cost(od, sp, fallback, ctx.workload.constraints.spot, p_rep)
    tokens = sum((s.mean_rps or s.peak_rps) * s.output_tokens * 3600 for s in ctx.workload.services)
    images = sum((s.mean_rps or s.peak_rps) * s.images_per_request * 3600 for s in ctx.workload.services)
    has_spot = sp > 0
    return explain.cost_summary(
        priced.usd_per_hour, tokens, images,
        priced.expected_usd_per_hour if has_spot else priced.usd_per_hour,
        priced.worst_case_usd_per_hour if has_spot else priced.usd_per_hour,
    )


def _candidates(ctx: Context) -> list[Candidate]:
    """Every option in every market, for the report. Built with `model_construct`: every field comes from this
    module's own typed values (a large workload has tens of thousands of them; validating each would cost more
    than the whole MILP)."""
    markets: dict[str, dict[str, float]] = defaultdict(dict)
    for o in ctx.offers:
        prev = markets[o.offer.gpu].get(o.offer.market, math.inf)
        markets[o.offer.gpu][o.offer.market] = min(prev, o.offer.usd_per_gpu_hour)
    priced = {g: sorted(m.items()) for g, m in markets.items()}
    outs = {sc.service.name: sc.service.output_tokens for sc in ctx.services}
    fractions: dict[tuple[str, str], float] = {}
    out = []
    for e in ctx.evals:
        if (e.gpu, e.slice) not in fractions:
            gpu = ctx.gpus[e.gpu]
            fractions[(e.gpu, e.slice)] = (1.0 if e.slice == WHOLE else
                                           gpu.mig_profile(e.slice).compute_slices / gpu.mig.compute_slices)
        fraction = fractions[(e.gpu, e.slice)]
        at = e.capacity.at_capacity
        capacity = round(e.capacity.capacity_rps, 6)
        p95 = round(at.e2el_p95_ms, 3) if at else None
        tokens_h = e.capacity.capacity_rps * outs[e.service] * 3600
        fits, usable, reason, provenance = e.fit.fits, e.usable, e.reason, e.capacity.provenance
        for market, price in priced[e.gpu]:
            per_replica = price * fraction
            out.append(
                Candidate.model_construct(
                    service=e.service,
                    variant=e.variant,
                    gpu=e.gpu,
                    slice=e.slice,
                    market=market,
                    fits=fits,
                    meets_slo=usable,
                    capacity_rps=capacity,
                    usd_per_hour_per_replica=round(per_replica, 6),
                    p95_latency_ms=p95,
                    usd_per_million_output_tokens=round(per_replica / (tokens_h / 1e6), 6) if tokens_h > 0 else None,
                    reason=reason,
                    provenance=provenance,
                )
            )
    return out


def _service_plans(ctx: Context, solved: Solved, groups: list[NodeGroup], candidates: list[Candidate]):
    c = ctx.workload.constraints
    by_service: dict[str, list[Candidate]] = defaultdict(list)
    for cand in candidates:
        by_service[cand.service].append(cand)
    provided: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for g in groups:
        gpus = g.instances * g.gpus_per_instance
        for r in g.gpu_layout.replicas:
            provided[r.service] += r.capacity_rps * gpus
            count[r.service] += gpus
    out = []
    for sc in ctx.services:
        name = sc.service.name
        variant = solved.solution.variant_of[name]
        chosen = next(v for v in sc.variants if v.name == variant)
        floor = sc.service.quality
        if floor.max_kl is None and floor.min_top1_agreement is None:
            quality = "no quality floor set"
        else:
            quality = (f"quality floor met: KL {chosen.mean_kl:g}, top-1 {chosen.top1_agreement:g} "
                       f"({chosen.fidelity_provenance.kind})")
        where = defaultdict(int)
        for g in groups:
            for r in g.gpu_layout.replicas:
                if r.service == name:
                    where[f"{g.gpu} {r.slice} {g.market.replace('_', '-')}"] += g.instances * g.gpus_per_instance
        deployed = ", ".join(f"{n} x {k}" for k, n in sorted(where.items()))
        out.append(
            ServicePlan(
                service=name,
                model=sc.service.model,
                variant=variant,
                why=explain.why_variant(name, variant, by_service.get(name, []), quality, sc.excluded, deployed),
                required_rps=round(sc.demand_rps * (1 + c.headroom), 6),
                provided_rps=round(provided[name], 6),
                replicas=count[name],
                availability=round(solved.availability.get(name, 1.0), 9),
                fidelity={"mean_kl": chosen.mean_kl, "top1_agreement": chosen.top1_agreement},
                slo=sc.service.slo.as_dict(),
            )
        )
    return out


def _binding(ctx: Context, solved: Solved) -> list[str]:
    out = []
    chosen = {(r.service, r.variant, r.gpu, r.slice) for r in solved.problem.options}
    used = {(svc, var, next(o.gpu for o in solved.problem.offers if o.key == okey), sl)
            for (okey, sl, svc, var) in solved.solution.replicas}
    keys = defaultdict(set)
    for e in ctx.evals:
        if (e.service, e.variant, e.gpu, e.slice) in used & chosen and e.capacity.binding_key:
            keys[e.service].add(e.capacity.binding_key)
    for svc, ks in sorted(keys.items()):
        out.append(f"{svc}: replica capacity is limited by {', '.join(sorted(ks))}")
    for svc, a in sorted(solved.availability.items()):
        if a < ctx.availability_target:
            out.append(f"{svc}: availability {a:.6f} below the target {ctx.availability_target} after "
                       f"{solved.rounds} solve(s)")
    on_spot = _spot_replicas(solved.solution, solved.problem)
    for svc in sorted(on_spot):
        tier = solved.tiers.get(svc)
        if tier is None:
            continue
        if tier.events is None:
            rule = "on-demand carries the peak alone; spot only adds headroom"
        else:
            limit = f", at most {tier.max_spot_replicas} spot replicas" if tier.max_spot_replicas else ""
            rule = (f"capacity survives any {tier.events} loss(es) of a zone's spot capacity or of its largest spot "
                    f"instance{limit}")
        out.append(f"{svc}: availability {solved.availability.get(svc, 1.0):.6f} >= target "
                   f"{ctx.availability_target}: {rule}")
    return out


def make_plan(
    workload: Workload,
    profiles: Mapping[str, BenchmarkProfile] | None = None,
    manifests: Mapping[str, VariantManifest] | None = None,
    gpu_catalog: GpuCatalog | None = None,
    price_catalog: PriceCatalog | None = None,
    mode: str = "cloud",
    inventory: GpuInventory | None = None,
    availability: float | None = None,
    name: str | None = None,
    workload_ref: str | None = None,
    prices_path: str = "profiles/prices.yaml",
    attribute_levers: bool = True,
    arch_loader: Callable[[str], ModelArch] = load_model_arch,
) -> Plan:
    """Plan the cheapest deployment of `workload`; raises PlanInputError or PlanInfeasible (both name the cause)."""
    if gpu_catalog is None:
        from vlmopt.hw.catalog import load_gpu_catalog

        gpu_catalog = load_gpu_catalog()
    ctx = build_context(workload, profiles or {}, manifests or {}, gpu_catalog, price_catalog, mode, inventory,
                        availability, prices_path, arch_loader)
    diagnose(ctx)
    allowed = set(ALL_LEVERS)
    if "spot" not in ctx.workload.constraints.markets or mode == "fleet":
        allowed.discard("spot")
    if not ctx.workload.constraints.allow_mig:
        allowed.discard("mig_packing")
    if not any(v.scheme != "BF16" for sc in ctx.services for v in sc.variants):
        allowed.discard("quantization")
    full = frozenset(allowed)
    solved = solve_levers(ctx, full)
    if solved is None:
        raise PlanInfeasible(_explain_milp_failure(ctx, full))

    cache: dict[frozenset[str], Solved | None] = {full: solved}
    large = len(ctx.services) > PRUNE_ABOVE_SERVICES
    # Large workloads: each lever-off re-solve gets a short time limit (its best plan is then an upper bound of
    # that step's optimum, and the solver stats say so); small ones are solved exactly.
    attribution_limit = ATTRIBUTION_TIME_LIMIT_S if large else None

    def cost_with(levers: frozenset[str]) -> float | None:
        key = levers & full
        if key not in cache:
            cache[key] = solve_levers(ctx, key, time_limit_s=attribution_limit)
        found = cache[key]
        return found.solution.usd_per_hour if found else None

    attribution = explain.attribute_levers(cost_with, allowed) if attribute_levers else None
    groups = _node_groups(ctx, solved)
    candidates = _candidates(ctx)
    cost = _costs(ctx, groups)
    baseline = None
    if attribution is not None and attribution.baseline_usd_per_hour is not None:
        base = cache[frozenset()]
        assert base is not None
        base_groups = _node_groups(ctx, base)
        baseline = Baseline(cost=_costs(ctx, base_groups), node_groups=base_groups)
    notes = list(ctx.notes) + (list(attribution.notes) if attribution else [])
    if any(e.capacity.provenance.kind == "estimated" for e in ctx.evals if e.usable):
        notes.append("capacities marked 'estimated' come from the roofline model, not from a benchmark: run "
                     "`vlmopt benchmark` on the chosen GPU/slice to replace them with measurements")
    if any(v.quantization_flag or v.checkpoint.startswith("variants/") for sc in ctx.services for v in sc.variants):
        notes.append("variants without a manifest point at the bf16 checkpoint (fp8: quantized online by vLLM) or at "
                     "variants/<model>/<variant> folders that `vlmopt quantize` writes")
    solver = dict(solved.solution.stats)
    solver["status"] = solved.solution.status
    solver["availability_rounds"] = solved.rounds
    solver["milp_solves"] = sum(found.rounds if found else 1 for found in cache.values())
    if large:
        solver["pruning"] = (f"heuristic: >{PRUNE_ABOVE_SERVICES} services, kept the variants within "
                             f"{PRUNE_VARIANT_SLACK:.0%} of each service's best $/h per req/s, the "
                             f"{PRUNE_KEEP_PER_VARIANT} most cost-efficient options per service, variant and market, "
                             f"the cheapest big enough, and on spot the {PRUNE_KEEP_PER_VARIANT} best per req/s left "
                             f"after the spot tier's losses; "
                             f"HiGHS stops within {LARGE_MIP_REL_GAP:.0%} of its bound or after "
                             f"{LARGE_TIME_LIMIT_S:g} s")
    if attribution is not None:
        limited = sorted(",".join(sorted(k)) or "baseline" for k, found in cache.items()
                         if found is not None and k != full and found.solution.status != "optimal")
        how = (f"each lever step re-solved with a {attribution_limit:g} s time limit" if attribution_limit
               else "each lever step re-solved to optimality")
        if limited:
            how += f"; not proven optimal: [{'; '.join(limited)}] (their costs are the best plans found, upper bounds)"
        solver["lever_attribution"] = how
    solver["layouts"] = len(ctx.layouts)
    solver["offers"] = len(ctx.offers)
    return Plan(
        name=name or workload.name,
        mode=mode,  # type: ignore[arg-type]
        created=utc_now_iso(),
        workload=workload_ref or f"bundled:{workload.name}",
        services=_service_plans(ctx, solved, groups, candidates),
        node_groups=groups,
        cost=cost,
        baseline=baseline,
        levers=list(attribution.levers) if attribution else [],
        binding_constraints=_binding(ctx, solved),
        candidates=candidates,
        inputs=ctx.inputs,
        solver=solver,
        availability_target=ctx.availability_target,
        notes=notes,
    )
