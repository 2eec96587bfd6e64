"""The synthetic planning instance of the scaling benchmark (scripts/bench_planner_scaling.py) and its test: many
services over the bundled models, and a price for every catalog GPU in both markets. Its figures are for timing
the planner, not for budgeting: GPUs without a row in the bundled prices.yaml get a made-up price."""

from __future__ import annotations

from vlmopt.paths import data_file
from vlmopt.schemas.catalog import GpuCatalog, PriceCatalog, PriceEntry
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

MODELS = ("qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen2.5-vl-32b", "gemma-3-12b", "llava-1.5-7b")
SPOT_DISCOUNT = 0.4


def synthetic_prices(catalog: GpuCatalog) -> PriceCatalog:
    """One single-GPU on-demand and spot row per catalog GPU: the bundled catalog's price where it has one, else
    2 $/h per TB/s of memory bandwidth (x 0.4 on spot), labelled synthetic."""
    real = load_model(PriceCatalog, data_file("prices.yaml"))
    rows = []
    for gpu in catalog.gpus:
        for market, factor in (("on_demand", 1.0), ("spot", SPOT_DISCOUNT)):
            known = [r for r in real.prices if r.gpu == gpu.id and r.market == market and r.gpus_per_instance == 1]
            price = known[0].usd_per_hour if known else round(gpu.memory_bandwidth_gbs / 1000 * 2.0 * factor, 4)
            rows.append(PriceEntry(cloud="bench", region="r1", instance_type=f"{gpu.id}-x1", gpu=gpu.id,
                                   gpus_per_instance=1, market=market, usd_per_hour=price,
                                   source="synthetic (bench)", retrieved="2026-11"))
    return PriceCatalog(prices=rows)


def scaling_workload(n: int) -> Workload:
    """n services cycling through 5 models, 7 peak loads (0.5-5 req/s), 5 prompt lengths, 4 output lengths, 1-2
    images, 2 context limits and 12 SLOs: no two of the first 50 alike."""
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
