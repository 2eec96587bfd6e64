"""A small planning context shared by the tests of the planner's steps (problem, solve, assemble): two services,
an H100 (with MIG) and an L4, both markets, the bundled prices. Built once per test session."""

from __future__ import annotations

from functools import cache

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.paths import data_file
from vlmopt.plan.context import Context, build_context
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload


def small_workload(**constraints) -> Workload:
    return Workload(name="small", constraints={"gpus": ["h100-sxm-80gb", "l4-24gb"], **constraints}, services=[
        {"name": "captions", "model": "qwen2.5-vl-3b", "peak_rps": 1, "input_tokens": 64, "output_tokens": 32,
         "max_model_len": 4096, "slo": {"ttft_p95_ms": 2000, "tpot_p95_ms": 80}},
        {"name": "chat", "model": "qwen2.5-vl-7b", "peak_rps": 3, "input_tokens": 256, "output_tokens": 128,
         "slo": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50}},
    ])


@cache
def small_context(on_demand_unavailability: float | None = None) -> Context:
    """`on_demand_unavailability`: the workload's figure for on-demand instances (None: the clouds' SLA floor)."""
    workload = small_workload(on_demand={"instance_unavailability": on_demand_unavailability})
    inputs = PlanInputs(workload=workload, gpu_catalog=load_gpu_catalog(),
                        price_catalog=load_model(PriceCatalog, data_file("prices.yaml")))
    return build_context(inputs, PlanningOptions(), load_model_arch)
