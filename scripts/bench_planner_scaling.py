"""How long does the planner take on a big problem? 50 services x every catalog GPU x every MIG layout x 2 markets.

Every GPU in the catalog gets an on-demand and a spot offer (vlmopt/plan/synthetic.py: catalog prices where
the bundled price catalog has them, otherwise a synthetic price proportional to memory bandwidth: the benchmark is
about solve time, not dollars). Prints the problem size and, per run, wall and CPU seconds for: building the options
(memory fit + roofline for every service x variant x GPU x slice), the MILP alone (the availability tiers included,
relax and pack: one exact MILP per service, then the packing; with --exact also the whole problem as one MILP, the
peer it replaces), `make_plan` end to end
without lever attribution, and `make_plan` with it; and the optimality gap proved for each. CPU time is the figure
to judge on a shared machine (wall time grows with other load). Usage:
    .venv/bin/python scripts/bench_planner_scaling.py [--services N] [--runs 3] [--exact]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import scipy

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.plan.context import build_context
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.optimizer import solve
from vlmopt.plan.planner import ALL_LEVERS, make_plan
from vlmopt.plan.problem import problem_for
from vlmopt.plan.solve import solve_problem, spot_tiers
from vlmopt.plan.synthetic import scaling_workload, synthetic_prices


def timed(function: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one_run(services: int, exact: bool) -> dict[str, tuple[float, float]]:
    catalog = load_gpu_catalog()
    inputs = PlanInputs(workload=scaling_workload(services), gpu_catalog=catalog,
                        price_catalog=synthetic_prices(catalog), prices_path="synthetic")
    ctx, *t_build = timed(lambda: build_context(inputs, PlanningOptions(), load_model_arch))
    tiers = spot_tiers(ctx)
    problem = problem_for(ctx, ALL_LEVERS, {sc.service.name: tiers[0] for sc in ctx.services})
    (solution, loss_solves), *t_solve = timed(lambda: solve_problem(problem))
    steps = {}
    if exact:
        # the same first-round problem as one MILP, a binary per on-demand group (the peer relax and pack replaces)
        exact_problem = problem_for(ctx, ALL_LEVERS, {sc.service.name: tiers[0] for sc in ctx.services})
        exact_solution, *t_exact = timed(lambda: solve(exact_problem))
        print(f"  whole problem as one MILP: status {exact_solution.status}, proven gap "
              f"{exact_solution.stats.get('proven_gap')}, ${exact_solution.usd_per_hour:.2f}/h")
        steps["whole problem as one MILP (HiGHS)"] = tuple(t_exact)
    plan, *t_plan = timed(lambda: make_plan(inputs, PlanningOptions(attribute_levers=False)))
    attributed, *t_attributed = timed(lambda: make_plan(inputs))
    print(f"  services {len(inputs.workload.services)}, GPUs {len(catalog.gpus)}, layouts {len(ctx.layouts)} (whole "
          f"+ maximal MIG), offers {len(ctx.offers)}, options evaluated {len(ctx.evals)}")
    print(f"  MILP of round 1 ({loss_solves} solves, method {solution.stats.get('method', 'whole problem')}): "
          f"packing {solution.stats['variables']} variables, {solution.stats['constraints']} constraints, "
          f"status {solution.status}, proven gap "
          f"{solution.stats.get('proven_gap')}, ${solution.usd_per_hour:.2f}/h")
    print(f"  plan: ${plan.cost.usd_per_hour:.2f}/h, status {plan.solver['status']}, proven gap "
          f"{plan.solver.get('proven_gap')}, {plan.solver.get('availability_rounds')} availability round(s), lowest "
          f"service availability {min(s.availability for s in plan.services):.6f} (target {plan.availability_target})"
          f"; with attribution {attributed.solver.get('milp_solves')} MILP solves, levers "
          f"{[(lv.name, round(lv.usd_per_hour_saved, 2)) for lv in attributed.levers]}")
    return {"build options (memory fit + roofline)": tuple(t_build),
            "MILP solves of round 1 (HiGHS): relax and pack": tuple(t_solve), **steps,
            "make_plan, no lever attribution": tuple(t_plan), "make_plan with lever attribution": tuple(t_attributed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--exact", action="store_true",
                        help="also solve the whole problem as one MILP (a binary per on-demand group; slow)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, python {platform.python_version()}, scipy {scipy.__version__}")
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}:")
        runs.append(one_run(args.services, args.exact))
    print("seconds: median (min-max) over runs")
    print(f"  {'step':<58} {'wall':>18} {'CPU':>18}")
    for step in runs[0]:
        cells = []
        for column in (0, 1):
            values = [r[step][column] for r in runs]
            cells.append(f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"  {step:<58} {cells[0]:>18} {cells[1]:>18}")


if __name__ == "__main__":
    main()
