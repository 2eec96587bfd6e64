"""How long does the planner take on a big problem? 50 services x every catalog GPU x every MIG layout x 2 markets.

Every GPU in the catalog gets an on-demand and a spot offer (catalog prices where profiles/prices.yaml has them,
otherwise a synthetic price proportional to memory bandwidth: the benchmark is about solve time, not dollars).
Prints the problem size and wall times for: building the options (memory fit + roofline for every service x
variant x GPU x slice), the MILP alone, and the whole make_plan (availability rounds included, lever attribution
excluded, as it re-solves four more times). Usage: .venv/bin/python scripts/bench_planner_scaling.py [--services N]
"""

from __future__ import annotations

import argparse
import platform
import time

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import profiles_dir
from vlmopt.plan import planner
from vlmopt.plan.optimizer import solve
from vlmopt.schemas.catalog import PriceCatalog, PriceEntry
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

MODELS = ("qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen2.5-vl-32b", "gemma-3-12b", "llava-1.5-7b")


def synthetic_prices(catalog) -> PriceCatalog:
    real = load_model(PriceCatalog, profiles_dir() / "prices.yaml")
    rows = []
    for gpu in catalog.gpus:
        for market, factor in (("on_demand", 1.0), ("spot", 0.4)):
            known = [r for r in real.prices if r.gpu == gpu.id and r.market == market and r.gpus_per_instance == 1]
            price = known[0].usd_per_hour if known else round(gpu.memory_bandwidth_gbs / 1000 * 2.0 * factor, 4)
            rows.append(PriceEntry(cloud="bench", region="r1", instance_type=f"{gpu.id}-x1", gpu=gpu.id,
                                   gpus_per_instance=1, market=market, usd_per_hour=price,
                                   source="synthetic (bench)", retrieved="2026-11"))
    return PriceCatalog(prices=rows)


def workload(n: int) -> Workload:
    services = []
    for i in range(n):
        services.append({
            "name": f"svc-{i:02d}",
            "model": MODELS[i % len(MODELS)],
            "peak_rps": 0.5 + (i % 7) * 0.75,
            "input_tokens": 128 + 64 * (i % 5),
            "output_tokens": 64 + 32 * (i % 4),
            "images_per_request": 1 + i % 2,
            "max_model_len": 4096 if i % 3 else 8192,
            "slo": {"ttft_p95_ms": 1500 + 250 * (i % 4), "tpot_p95_ms": 60 + 10 * (i % 3)},
        })
    return Workload(name=f"bench-{n}", services=services)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=50)
    args = parser.parse_args()
    catalog = load_gpu_catalog()
    prices = synthetic_prices(catalog)
    wl = workload(args.services)

    t0 = time.perf_counter()
    ctx = planner.build_context(wl, {}, {}, catalog, prices, "cloud", None, None, "synthetic", planner.load_model_arch)
    t_build = time.perf_counter() - t0
    problem = planner._problem(ctx, planner.ALL_LEVERS, {})
    t1 = time.perf_counter()
    solution = solve(problem)
    t_solve = time.perf_counter() - t1
    t2 = time.perf_counter()
    plan = planner.make_plan(wl, gpu_catalog=catalog, price_catalog=prices, attribute_levers=False)
    t_plan = time.perf_counter() - t2

    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"services {len(wl.services)}, GPUs {len(catalog.gpus)}, layouts {len(ctx.layouts)} "
          f"(whole + maximal MIG), offers {len(ctx.offers)} (2 markets), options evaluated {len(ctx.evals)}")
    print(f"MILP: {solution.stats['variables']} integer variables, {solution.stats['constraints']} constraints, "
          f"status {solution.status}, ${solution.usd_per_hour:.2f}/h")
    print(f"build options (memory fit + roofline): {t_build:.2f} s")
    print(f"MILP solve (HiGHS):                    {t_solve:.2f} s")
    print(f"make_plan end to end:                  {t_plan:.2f} s "
          f"({plan.solver.get('availability_rounds')} availability round(s), ${plan.cost.usd_per_hour:.2f}/h)")


if __name__ == "__main__":
    main()
