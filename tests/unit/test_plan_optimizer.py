"""The MILP against an independent brute force: enumerate every fleet of explicitly assigned GPUs and keep the
cheapest one that meets every constraint. The brute force knows nothing of the aggregate slice counts the MILP
uses, so agreement checks the formulation as well as the solver."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict

import pytest

from vlmopt.plan.milp_model import WHOLE, Demand, Layout, Offer, Problem, ReplicaOption
from vlmopt.plan.optimizer import independent_parts, solve
from vlmopt.plan.placement import lay_out_gpus
from vlmopt.plan.spot import SpotTier

pytestmark = pytest.mark.unit

MAX_GPUS = 3


def _gpu_configs(problem: Problem) -> list[tuple[Offer, Layout, tuple[ReplicaOption | None, ...]]]:
    """Every distinct way to buy one GPU: offer x layout x (option or idle) per slice, at least one slice used."""
    configs = []
    for offer in problem.offers:
        for layout in (lay for lay in problem.layouts if lay.gpu == offer.gpu):
            per_slice = [
                [None, *[o for o in problem.options if o.gpu == offer.gpu and o.slice == s]] for s in layout.slices
            ]
            seen = set()
            for assignment in itertools.product(*per_slice):
                key = tuple(sorted((s, id(a)) for s, a in zip(layout.slices, assignment, strict=True)))
                if key in seen or all(a is None for a in assignment):
                    continue
                seen.add(key)
                configs.append((offer, layout, assignment))
    return configs


def brute_force(problem: Problem, max_gpus: int = MAX_GPUS) -> float:
    """Cheapest fleet of at most `max_gpus` explicitly assigned GPUs meeting every constraint (inf if none)."""
    configs = _gpu_configs(problem)
    services = [d.service for d in problem.demands]
    any_zone_risk = any(o.zone_share < 1 for o in problem.offers)
    offers = {o.key: o for o in problem.offers}
    # Per config: capacity and zone-loss capacity per service, and the (service, variant) pairs it runs.
    cap = [[sum(o.capacity_rps * (1 - c[0].haircut) for o in c[2] if o and o.service == s) for s in services]
           for c in configs]
    flo = [[sum(o.capacity_rps * c[0].zone_share for o in c[2] if o and o.service == s) for s in services]
           for c in configs]
    runs = [{(o.service, o.variant) for o in c[2] if o} for c in configs]
    best_cap = [max((row[j] for row in cap), default=0.0) for j in range(len(services))]

    def cost(counts: dict[str, int]) -> float:
        return sum(offers[k].usd_per_instance_hour * math.ceil(n / offers[k].gpus_per_instance)
                   for k, n in counts.items())

    def feasible(chosen: list[int], counts: dict[str, int]) -> bool:
        for j, d in enumerate(problem.demands):
            if sum(cap[i][j] for i in chosen) < d.required_rps - 1e-9:
                return False
            if d.spot_tier is not None:
                if not meets_spot_tier(d, [configs[i] for i in chosen]):
                    return False
            elif any_zone_risk and d.floor_rps > 0 and sum(flo[i][j] for i in chosen) < d.floor_rps - 1e-9:
                return False
        if problem.single_variant:
            pairs = set().union(*(runs[i] for i in chosen))
            if any(sum(1 for (s, _) in pairs if s == svc) > 1 for svc in services):
                return False
        per_type: dict[str, int] = defaultdict(int)
        for key, n in counts.items():
            offer = offers[key]
            if offer.stock_gpus is not None and n > offer.stock_gpus:
                return False
            per_type[offer.gpu] += math.ceil(n / offer.gpus_per_instance) * offer.gpus_per_instance
        return all(per_type[g] <= q for g, q in problem.quotas.items())

    best = math.inf

    def search(start: int, chosen: list[int], counts: dict[str, int]) -> None:
        nonlocal best
        if cost(counts) >= best - 1e-12:
            return  # adding GPUs never lowers the cost
        if chosen and feasible(chosen, counts):
            best = cost(counts)
            return
        left = max_gpus - len(chosen)
        if left == 0:
            return
        for j, d in enumerate(problem.demands):  # even the best GPUs cannot close the gap
            if sum(cap[i][j] for i in chosen) + left * best_cap[j] < d.required_rps - 1e-9:
                return
        for i in range(start, len(configs)):
            key = configs[i][0].key
            counts[key] = counts.get(key, 0) + 1
            chosen.append(i)
            search(i, chosen, counts)
            chosen.pop()
            counts[key] -= 1
            if counts[key] == 0:
                del counts[key]

    search(0, [], {})
    return best


def _instance_capacity(problem: Problem, offer: Offer, service: str, variant: str, on_mig: bool) -> float:
    """The spot tier's u: what one instance of `offer` holds of (service, variant) at most, on its whole-GPU layout
    or on its best MIG layout (written out independently of the optimizer's own function)."""
    best = {}
    for o in problem.options:
        if o.service == service and o.variant == variant and o.gpu == offer.gpu:
            best[o.slice] = max(best.get(o.slice, 0.0), o.capacity_rps)
    per_gpu = 0.0
    for layout in problem.layouts:
        if layout.gpu == offer.gpu and layout.is_mig == on_mig:
            per_gpu = max(per_gpu, sum(best.get(s, 0.0) for s in layout.slices))
    return per_gpu * offer.gpus_per_instance


def meets_spot_tier(demand: Demand, fleet: list) -> bool:
    """The spot tier rule on explicitly assigned GPUs: at most n_k spot replicas; on-demand + spot - k x sum over
    spot groups (offer, variant, whole/MIG) of ceil(replicas / Z) x u >= the peak; every group's own part >= 0.
    The on-demand tier (events None): on-demand alone >= the peak."""
    tier = demand.spot_tier
    on_demand = spot_total = 0.0
    spot_replicas = on_demand_replicas = 0
    groups: dict[tuple, list[float]] = defaultdict(list)
    on_demand_groups: set[tuple] = set()
    for offer, layout, assignment in fleet:
        for option in assignment:
            if option is None or option.service != demand.service:
                continue
            if offer.market == "spot":
                spot_total += option.capacity_rps
                spot_replicas += 1
                groups[(offer, option.variant, layout.is_mig)].append(option.capacity_rps)
            else:
                on_demand += option.capacity_rps
                on_demand_replicas += 1
                on_demand_groups.add((offer, option.variant, layout.is_mig))
    if tier.on_demand_fails and tier.events is not None:
        return _meets_failing_tier(demand, tier, on_demand, spot_total, spot_replicas, on_demand_replicas, groups,
                                   on_demand_groups)
    if tier.events is None:
        return not spot_replicas or on_demand >= demand.floor_rps - 1e-9
    if spot_replicas > tier.max_spot_replicas:
        return False
    loss = 0.0
    for (offer, variant, on_mig), caps in groups.items():
        unit = _instance_capacity(PROBLEM_OF[id(demand)], offer, demand.service, variant, on_mig)
        group_loss = tier.events * math.ceil(len(caps) / tier.zones) * unit
        if sum(caps) < group_loss - 1e-9:
            return False
        loss += group_loss
    return not spot_replicas or on_demand + spot_total - loss >= demand.floor_rps - 1e-9


def _meets_failing_tier(demand: Demand, tier: SpotTier, on_demand: float, spot_total: float, spot_replicas: int,
                        on_demand_replicas: int, groups: dict, on_demand_groups: set) -> bool:
    """A tier under which on-demand instances fail too: at most n_k instances that can fail (on-demand, + spot
    when it counts); on-demand (+ spot) - k x L >= the peak, L the most one event can take: a zone's spot content
    (sum over spot groups of ceil(n/Z) x u) or one on-demand instance (u of each on-demand group used)."""
    problem = PROBLEM_OF[id(demand)]
    counted = on_demand_replicas + (spot_replicas if tier.spot_counts else 0)
    if counted > tier.max_spot_replicas:
        return False
    zone = 0.0
    if tier.spot_counts and tier.events:
        for (offer, variant, on_mig), caps in groups.items():
            unit = _instance_capacity(problem, offer, demand.service, variant, on_mig)
            if sum(caps) < tier.events * math.ceil(len(caps) / tier.zones) * unit - 1e-9:
                return False
            zone += math.ceil(len(caps) / tier.zones) * unit
    largest = max([zone] + [_instance_capacity(problem, *g[:1], demand.service, *g[1:]) for g in on_demand_groups])
    total = on_demand + (spot_total if tier.spot_counts else 0.0)
    return total - tier.events * largest >= demand.floor_rps - 1e-9


PROBLEM_OF: dict[int, Problem] = {}  # demand -> its problem, for the instance capacities


def random_problem(rng: random.Random) -> Problem:
    offers = [
        Offer("mig-od", "mig", "on_demand", round(rng.uniform(2.0, 4.0), 2)),
        Offer(
            "mig-spot",
            "mig",
            "spot",
            round(rng.uniform(0.6, 1.8), 2),
            haircut=rng.choice([0.0, 0.05, 0.2]),
            zone_share=rng.choice([0.0, 0.5, 2 / 3]),
        ),
        Offer("big-spot", "big", "spot", round(rng.uniform(0.8, 2.0), 2), haircut=0.05, zone_share=2 / 3),
        Offer("big-od", "big", "on_demand", round(rng.uniform(2.5, 6.0), 2), gpus_per_instance=rng.choice([1, 2])),
    ]
    layouts = [
        Layout("mig", (WHOLE,)),
        Layout("mig", ("a", "a"), (0, 1)),
        Layout("mig", ("b", "a"), (0, 2)),
        Layout("big", (WHOLE,)),
    ]
    services = ["s1", "s2"][: rng.choice([1, 2])]
    options = []
    for svc in services:
        for var in ("v1", "v2"):
            for gpu, slice_ in (("mig", WHOLE), ("mig", "a"), ("mig", "b"), ("big", WHOLE)):
                if rng.random() < 0.7:
                    full = {WHOLE: 1.0, "b": 0.6, "a": 0.35}[slice_] * (2.0 if gpu == "big" else 1.0)
                    options.append(ReplicaOption(svc, var, gpu, slice_, round(full * rng.uniform(0.5, 1.5), 3)))
    demands = []
    for svc in services:
        peak = round(rng.uniform(0.2, 1.5), 3)
        tier = rng.choice([None, None, SpotTier(1, rng.choice([1, 2, 3]), rng.choice([2, 3])),
                           SpotTier(2, rng.choice([2, 3]), 3), SpotTier(None, None, 3),
                           SpotTier(1, rng.choice([2, 3, 4]), 3, on_demand_fails=True),
                           SpotTier(rng.choice([0, 1]), rng.choice([2, 3]), 3, on_demand_fails=True,
                                    spot_counts=False),
                           SpotTier(1, 3, 2, on_demand_fails=True, spot_counts=False)])
        demands.append(Demand(svc, required_rps=peak * 1.2, floor_rps=peak, spot_tier=tier))
    quotas = {"big": rng.choice([1, 2, 4])} if rng.random() < 0.4 else {}
    problem = Problem(offers, layouts, options, demands, quotas=quotas, single_variant=rng.random() < 0.8)
    PROBLEM_OF.update({id(d): problem for d in demands})
    return problem


@pytest.mark.parametrize("seed", range(30))
def test_milp_cost_equals_brute_force_minimum(seed: int) -> None:
    problem = random_problem(random.Random(seed))
    solution = solve(problem)
    brute = brute_force(problem)
    if not solution.ok:
        assert solution.status == "infeasible"
        assert brute == math.inf, f"brute force found {brute} where the MILP found nothing"
        return
    gpus_used = sum(solution.gpus.values())
    assert brute >= solution.usd_per_hour - 1e-6, "the brute force beat the MILP: the MILP is not optimal"
    if gpus_used <= MAX_GPUS:
        assert solution.usd_per_hour == pytest.approx(brute, rel=1e-9, abs=1e-9)


def test_random_instances_exercise_the_interesting_cases() -> None:
    """Guards the generator: the optimality test is only worth something if MIG, spot, instance rounding and
    infeasible instances all occur among its seeds."""
    seen: Counter = Counter()
    for seed in range(30):
        problem = random_problem(random.Random(seed))
        solution = solve(problem)
        if not solution.ok:
            seen["infeasible"] += 1
            continue
        seen["within_cap"] += sum(solution.gpus.values()) <= MAX_GPUS
        seen["mig"] += any(layout.is_mig for (_, layout) in solution.gpus)
        seen["spot"] += any(key == "mig-spot" for (key, _) in solution.gpus)
        seen["multi_service_gpu"] += any(
            len({a[1] for a in placed.assignment}) > 1 for placed, _ in lay_out_gpus(problem, solution)
        )
        tiered = {d.service for d in problem.demands if d.spot_tier is not None and d.spot_tier.events}
        seen["spot_tier_on_spot"] += any(
            key.endswith("spot") and svc in tiered for (key, _, svc, _) in solution.replicas
        )
        failing = {d.service for d in problem.demands if d.spot_tier is not None and d.spot_tier.on_demand_fails
                   and d.spot_tier.events}
        seen["on_demand_losses"] += any(key.endswith("od") and svc in failing
                                        for (key, _, svc, _) in solution.replicas)
    assert seen["within_cap"] >= 15
    for case in ("mig", "spot", "spot_tier_on_spot", "on_demand_losses"):
        assert seen[case] >= 2, seen


def _two_service_problem() -> Problem:
    offers = [Offer("h-od", "h", "on_demand", 4.0)]
    layouts = [Layout("h", (WHOLE,)), Layout("h", ("3g", "3g"), (0, 4))]
    options = [
        ReplicaOption("chat", "awq", "h", "3g", 1.0),
        ReplicaOption("ocr", "fp8", "h", "3g", 1.0),
        ReplicaOption("chat", "awq", "h", WHOLE, 2.0),
        ReplicaOption("ocr", "fp8", "h", WHOLE, 2.0),
    ]
    demands = [Demand("chat", 0.9), Demand("ocr", 0.9)]
    return Problem(offers, layouts, options, demands)


def test_two_services_share_one_gpu_through_mig() -> None:
    problem = _two_service_problem()
    solution = solve(problem)
    assert solution.ok
    assert solution.usd_per_hour == pytest.approx(4.0)
    placed = lay_out_gpus(problem, solution)
    assert len(placed) == 1
    gpu, count = placed[0]
    assert count == 1
    assert gpu.layout.slices == ("3g", "3g")
    assert {a[1] for a in gpu.assignment} == {"chat", "ocr"}


def test_single_variant_per_service_is_enforced() -> None:
    offers = [Offer("g-od", "g", "on_demand", 1.0)]
    layouts = [Layout("g", (WHOLE,))]
    options = [ReplicaOption("s", "cheap", "g", WHOLE, 1.0), ReplicaOption("s", "other", "g", WHOLE, 0.4)]
    # 1.4 req/s: one 'cheap' (1.0) + one 'other' (0.4) would do with 2 GPUs, as would 2 x 'cheap'.
    # 2.2 req/s: 'cheap' alone needs 3 GPUs; mixing would need 3 as well -- so force a case where mixing helps:
    demands = [Demand("s", 1.3)]
    mixed = solve(Problem(offers, layouts, options, demands, single_variant=False))
    single = solve(Problem(offers, layouts, options, demands, single_variant=True))
    assert mixed.ok and single.ok
    assert single.usd_per_hour == pytest.approx(2.0)
    assert len({v for (_, _, _, v) in single.replicas}) == 1


def test_instances_are_bought_whole() -> None:
    offers = [Offer("x8", "g", "on_demand", 80.0, gpus_per_instance=8), Offer("x1", "g", "on_demand", 11.0)]
    layouts = [Layout("g", (WHOLE,))]
    options = [ReplicaOption("s", "v", "g", WHOLE, 1.0)]
    few = solve(Problem(offers, layouts, options, [Demand("s", 3.0)]))
    many = solve(Problem(offers, layouts, options, [Demand("s", 8.0)]))
    assert few.usd_per_hour == pytest.approx(33.0) and few.instances == {"x1": 3}
    assert many.usd_per_hour == pytest.approx(80.0) and many.instances == {"x8": 1}


def test_zone_loss_floor_keeps_on_demand_when_spot_sits_in_one_zone() -> None:
    offers = [
        Offer("od", "g", "on_demand", 3.0),
        Offer("spot", "g", "spot", 1.0, haircut=0.01, zone_share=0.0),
    ]
    layouts = [Layout("g", (WHOLE,))]
    options = [ReplicaOption("s", "v", "g", WHOLE, 1.0)]
    solution = solve(Problem(offers, layouts, options, [Demand("s", 1.2, floor_rps=1.0)]))
    assert solution.ok
    assert solution.instances == {"od": 1, "spot": 1}  # OD carries the peak; spot covers the headroom
    assert solution.usd_per_hour == pytest.approx(4.0)


def test_quota_makes_it_infeasible() -> None:
    offers = [Offer("od", "g", "on_demand", 1.0)]
    problem = Problem(
        offers, [Layout("g", (WHOLE,))], [ReplicaOption("s", "v", "g", WHOLE, 1.0)], [Demand("s", 3.0)],
        quotas={"g": 2},
    )
    assert solve(problem).status == "infeasible"
    problem.quotas = {"g": 3}
    assert solve(problem).usd_per_hour == pytest.approx(3.0)


def test_service_without_any_option_is_reported() -> None:
    offers = [Offer("od", "g", "on_demand", 1.0)]
    solution = solve(Problem(offers, [Layout("g", (WHOLE,))], [], [Demand("s", 1.0)]))
    assert solution.status == "infeasible"
    assert "'s'" in solution.message


# ---- decomposition into independent parts -------------------------------------------------------------------------
def _whole_gpu_problem(rng: random.Random, services: int) -> Problem:
    """Services on whole GPUs of 1-GPU offers (independent), with some coupling drawn at random: a MIG layout
    two services can share, a quota over a GPU type, a 2-GPU instance, or a fleet pool's stock."""
    offers = [Offer(f"{g}-{m}", g, m, round(rng.uniform(0.5, 4.0), 2),
                    haircut=0.05 if m == "spot" else 0.0, zone_share=2 / 3 if m == "spot" else 1.0)
              for g in ("g1", "g2", "g3") for m in ("on_demand", "spot")]
    layouts = [Layout(g, (WHOLE,)) for g in ("g1", "g2", "g3")]
    coupling = rng.choice(["none", "mig", "quota", "instance", "stock"])
    if coupling == "mig":
        layouts.append(Layout("g1", ("a", "a"), (0, 1)))
    if coupling == "instance":
        offers.append(Offer("g2-x2", "g2", "on_demand", round(rng.uniform(1.0, 6.0), 2), gpus_per_instance=2))
    if coupling == "stock":
        offers = [o if o.key != "g3-on_demand" else Offer(o.key, o.gpu, o.market, o.usd_per_instance_hour,
                                                          stock_gpus=rng.choice([1, 2]))
                  for o in offers]
    options = []
    for i in range(services):
        for gpu in rng.sample(["g1", "g2", "g3"], 2):
            for var in ("v1", "v2")[: rng.choice([1, 2])]:
                options.append(ReplicaOption(f"s{i}", var, gpu, WHOLE, round(rng.uniform(0.4, 1.6), 3)))
                if coupling == "mig" and gpu == "g1":
                    options.append(ReplicaOption(f"s{i}", var, gpu, "a", round(rng.uniform(0.2, 0.8), 3)))
    demands = []
    for i in range(services):
        peak = round(rng.uniform(0.3, 1.2), 3)
        tier = rng.choice([None, SpotTier(1, 2, 3), SpotTier(None, None, 3)])
        demands.append(Demand(f"s{i}", required_rps=peak * 1.2, floor_rps=peak, spot_tier=tier))
    quotas = {"g2": rng.choice([1, 2, 3])} if coupling == "quota" else {}
    problem = Problem(offers, layouts, options, demands, quotas=quotas)
    PROBLEM_OF.update({id(d): problem for d in demands})
    return problem


@pytest.mark.parametrize("seed", range(30))
def test_solving_parts_separately_gives_the_joint_optimum(seed: int) -> None:
    """Exactness of the decomposition: the parts' optima add up to the optimum of the whole MILP, and both match
    the brute force (on instances small enough for it)."""
    problem = _whole_gpu_problem(random.Random(seed), services=random.Random(seed).choice([2, 3]))
    parts = solve(problem)
    joint = solve(problem, decompose=False)
    assert parts.status == joint.status
    if not joint.ok:
        return
    assert parts.usd_per_hour == pytest.approx(joint.usd_per_hour, rel=1e-9, abs=1e-9)
    assert set(parts.variant_of) == {d.service for d in problem.demands}
    if sum(parts.gpus.values()) <= MAX_GPUS:
        assert parts.usd_per_hour == pytest.approx(brute_force(problem), rel=1e-9, abs=1e-9)


def test_decomposition_instances_exercise_split_and_coupled_cases() -> None:
    seen: Counter = Counter()
    for seed in range(30):
        problem = _whole_gpu_problem(random.Random(seed), services=random.Random(seed).choice([2, 3]))
        seen["split" if len(independent_parts(problem)) > 1 else "coupled"] += 1
        seen["within_cap"] += solve(problem).ok and sum(solve(problem).gpus.values()) <= MAX_GPUS
    assert seen["split"] >= 5 and seen["coupled"] >= 5 and seen["within_cap"] >= 5, seen


def _services_on(gpu_slices: dict[str, list[tuple[str, str]]]) -> list[ReplicaOption]:
    return [ReplicaOption(svc, "v", gpu, slice_name, 1.0) for svc, places in gpu_slices.items()
            for gpu, slice_name in places]


def _parts(options: list[ReplicaOption], **problem_fields) -> list[set[str]]:
    offers = problem_fields.pop("offers", [Offer("g-od", "g", "on_demand", 1.0), Offer("h-od", "h", "on_demand", 2.0)])
    layouts = [Layout("g", (WHOLE,)), Layout("g", ("a", "a"), (0, 1)), Layout("h", (WHOLE,))]
    demands = [Demand(svc, 1.0) for svc in dict.fromkeys(o.service for o in options)]
    problem = Problem(offers, layouts, options, demands, **problem_fields)
    return [{d.service for d in part.demands} for part in independent_parts(problem)]


def test_independent_parts_follow_the_shared_resources() -> None:
    whole_only = _services_on({"s1": [("g", WHOLE)], "s2": [("g", WHOLE), ("h", WHOLE)], "s3": [("h", WHOLE)]})
    assert _parts(whole_only) == [{"s1"}, {"s2"}, {"s3"}]  # a whole 1-GPU instance holds one replica
    mig = _services_on({"s1": [("g", "a")], "s2": [("g", "a")], "s3": [("h", WHOLE)]})
    assert _parts(mig) == [{"s1", "s2"}, {"s3"}]  # slices of one GPU can go to both
    assert _parts(whole_only, quotas={"h": 2}) == [{"s1"}, {"s2", "s3"}]  # one quota over both
    eight = [Offer("g-x8", "g", "on_demand", 8.0, gpus_per_instance=8), Offer("h-od", "h", "on_demand", 2.0)]
    assert _parts(whole_only, offers=eight) == [{"s1", "s2"}, {"s3"}]  # one 8-GPU instance can hold both
    pool = [Offer("g-fleet", "g", "on_demand", 1.0, stock_gpus=2), Offer("h-od", "h", "on_demand", 2.0)]
    assert _parts(whole_only, offers=pool) == [{"s1", "s2"}, {"s3"}]  # both draw on the pool's 2 GPUs


def test_spot_mig_narrows_which_slices_may_run_on_spot() -> None:
    offers = [Offer("od", "h", "on_demand", 4.0), Offer("sp", "h", "spot", 1.0, haircut=0.0, zone_share=1.0)]
    layouts = [Layout("h", (WHOLE,)), Layout("h", ("3g", "3g"), (0, 4))]
    options = [ReplicaOption("s", "v", "h", "3g", 1.0), ReplicaOption("s", "v", "h", WHOLE, 1.5)]
    problem = Problem(offers, layouts, options, [Demand("s", 1.8)])
    free = solve(problem)
    assert free.usd_per_hour == pytest.approx(1.0) and any(lay.is_mig for (_, lay) in free.gpus)  # 2 x 3g on spot
    problem.spot_mig = frozenset()
    whole_only = solve(problem)
    assert not any(key == "sp" and slice_name != WHOLE for (key, slice_name, _, _) in whole_only.replicas)
    assert whole_only.usd_per_hour == pytest.approx(2.0)  # two whole spot GPUs


def test_fixed_on_demand_loss_rounds_give_plans_the_exact_model_accepts() -> None:
    """solve.solve_with_on_demand_losses fixes what one failing on-demand instance takes (no binaries): every plan
    it returns bounds its own largest on-demand instance, so the exact model (binaries) accepts it, and it costs no
    less than the exact optimum, and no more above it than the gap it records."""
    import dataclasses

    from vlmopt.plan.milp_model import on_demand_units_used
    from vlmopt.plan.solve import solve_with_on_demand_losses

    compared = equal = exact_fallbacks = 0
    gaps: list[float] = []
    for seed in range(30):
        exact_problem = random_problem(random.Random(seed))
        failing = {d.service for d in exact_problem.demands if d.spot_tier is not None
                   and d.spot_tier.on_demand_fails and d.spot_tier.events}
        if not failing:
            continue
        exact = solve(exact_problem)
        problem = dataclasses.replace(exact_problem, demands=list(exact_problem.demands))
        fixed, solves = solve_with_on_demand_losses(problem)
        assert solves <= 4
        gaps.append(fixed.proven_gap or 0.0)
        assert fixed.ok == exact.ok, seed
        if not fixed.ok:
            continue
        used = on_demand_units_used(problem, fixed)
        fell_back = all(d.on_demand_loss_rps is None for d in problem.demands)  # the exact model decided
        for demand in problem.demands:
            if demand.service in failing and not fell_back:
                assert used.get(demand.service, 0.0) <= demand.on_demand_loss_rps + 1e-9, seed
        assert fixed.usd_per_hour >= exact.usd_per_hour - 1e-6, seed
        compared += 1
        exact_fallbacks += fell_back
        equal += fixed.usd_per_hour == pytest.approx(exact.usd_per_hour, rel=1e-9, abs=1e-9)
        # the recorded gap is a true bound: the exact optimum is no cheaper than cost x (1 - gap)
        assert exact.usd_per_hour >= fixed.usd_per_hour * (1 - (fixed.proven_gap or 0.0)) - 1e-6, seed
    assert compared >= 5, "too few random instances with failing on-demand instances"
    # Both outcomes occur: round 1 proves the optimum, and a later round's plan records how far off it may be
    # (on instances this small one on-demand instance is a large share of the demand, so the gaps are wide).
    assert equal >= 1 and any(gap > 0 for gap in gaps), (equal, gaps)
    assert exact_fallbacks < compared, "every instance fell back to the exact model: the fixed bound is never used"
