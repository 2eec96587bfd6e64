"""How long does the planner take on a big problem? 50 services x every catalog GPU x every MIG layout x 2 markets.

Every GPU in the catalog gets an on-demand and a spot offer (vlmopt/plan/synthetic.py: catalog prices where
vlmopt/data/prices.yaml has them, otherwise a synthetic price proportional to memory bandwidth: the benchmark is about
solve time, not dollars). Prints the problem size and, per run, wall times for: building the options (memory fit +
roofline for every service x variant x GPU x slice), the MILP alone (the availability tiers included), `make_plan`
end to end without lever attribution, and `make_plan` with it. Usage:
    .venv/bin/python scripts/bench_planner_scaling.py [--services N] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import scipy

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.plan import planner
from vlmopt.plan.optimizer import solve
from vlmopt.plan.synthetic import scaling_workload, synthetic_prices


def one_run(services: int) -> dict[str, float]:
    catalog = load_gpu_catalog()
    prices = synthetic_prices(catalog)
    wl = scaling_workload(services)
    t0 = time.perf_counter()
    ctx = planner.build_context(wl, {}, {}, catalog, prices, "cloud", None, None, "synthetic", planner.load_model_arch)
    t_build = time.perf_counter() - t0
    tiers = planner._spot_tiers(ctx)
    problem = planner._problem(ctx, planner.ALL_LEVERS, {sc.service.name: tiers[0] for sc in ctx.services})
    t1 = time.perf_counter()
    solution = solve(problem)
    t_solve = time.perf_counter() - t1
    t2 = time.perf_counter()
    plan = planner.make_plan(wl, gpu_catalog=catalog, price_catalog=prices, attribute_levers=False)
    t_plan = time.perf_counter() - t2
    t3 = time.perf_counter()
    attributed = planner.make_plan(wl, gpu_catalog=catalog, price_catalog=prices, attribute_levers=True)
    t_attributed = time.perf_counter() - t3
    print(f"  services {len(wl.services)}, GPUs {len(catalog.gpus)}, layouts {len(ctx.layouts)} (whole + maximal "
          f"MIG), offers {len(ctx.offers)}, options evaluated {len(ctx.evals)}")
    print(f"  MILP: {solution.stats['variables']} integer variables, {solution.stats['constraints']} constraints, "
          f"status {solution.status}, gap {solution.stats.get('mip_gap')}, ${solution.usd_per_hour:.2f}/h")
    print(f"  plan: ${plan.cost.usd_per_hour:.2f}/h, {plan.solver.get('availability_rounds')} availability "
          f"round(s), lowest service availability {min(s.availability for s in plan.services):.6f} "
          f"(target {plan.availability_target}); with attribution {attributed.solver.get('milp_solves')} MILP "
          f"solves, levers {[(lv.name, round(lv.usd_per_hour_saved, 2)) for lv in attributed.levers]}")
    return {"build options (memory fit + roofline)": t_build, "one MILP solve (HiGHS)": t_solve,
            "make_plan, no lever attribution": t_plan, "make_plan with lever attribution": t_attributed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, scipy {scipy.__version__}")
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}:")
        runs.append(one_run(args.services))
    print("seconds: median (min-max) over runs")
    for step in runs[0]:
        values = [r[step] for r in runs]
        print(f"  {step:<40} {statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
