"""What a campaign costs before it runs: per job, startup + points x seconds per point, in GPU-hours (a MIG slice
holds its share of the GPU) and dollars from the price catalog. Every figure says where it came from
(docs/benchmark.md#what-a-campaign-costs)."""

from __future__ import annotations

import math
from datetime import datetime

from vlmopt.schemas.campaign import CampaignTarget, CostEstimate
from vlmopt.schemas.catalog import GpuSpec, PriceCatalog
from vlmopt.schemas.common import Provenance

from .command import BenchmarkSettings
from .targets import price_rows, slice_share

# Assumed when the user gives no --startup-minutes: pulling the vLLM image (about 10 GiB; a fresh node pulls it,
# a warm one has it), installing vlmopt into it, downloading the checkpoint, then vLLM loading the weights and
# capturing CUDA graphs. The deploy bundle's startup probe allows 20 minutes for the last step alone on large
# models (docs/deploy-bundle.md#choices-and-why); 10 minutes is a middle figure, to be replaced by a measured one
# (collect prints each job's own startup).
DEFAULT_STARTUP_S = 600.0
# Assumed per point when neither --duration nor an SLO bounds a request's time.
DEFAULT_POINT_S = 120.0


def request_seconds_bound(bench: BenchmarkSettings) -> tuple[float | None, str]:
    """Longest a request may take while the SLO holds: e2el, else TTFT + (output tokens - 1) x TPOT."""
    slo = bench.slo
    for key in ("e2el_p95_ms", "e2el_p50_ms"):
        if key in slo:
            return slo[key] / 1000, f"{key} {slo[key]:g} ms"
    ttft = next((k for k in ("ttft_p95_ms", "ttft_p50_ms") if k in slo), None)
    if ttft and "tpot_p95_ms" in slo:
        seconds = (slo[ttft] + max(bench.output_tokens - 1, 0) * slo["tpot_p95_ms"]) / 1000
        return seconds, f"{ttft} {slo[ttft]:g} ms + {bench.output_tokens - 1} x tpot_p95_ms {slo['tpot_p95_ms']:g} ms"
    return None, ""


def sweep_concurrencies(max_concurrency: int) -> list[int]:
    """An upper bound on the points a sweep measures: doubling up to the cap, then one bisection step per halving
    of the last interval (vlmopt/bench/sweep.py), counted at the largest concurrency."""
    doubling = [2**i for i in range(int(math.log2(max_concurrency)) + 1)]
    bisection = [doubling[-1]] * max(len(doubling) - 2, 0)
    return doubling + bisection


def run_seconds(bench: BenchmarkSettings, point_s_override: float | None) -> tuple[int, float, Provenance]:
    """(points, mean seconds per point, where the duration comes from)."""
    bound, bound_how = request_seconds_bound(bench)
    if bench.sweep:
        loads: list[float] = [float(c) for c in sweep_concurrencies(bench.sweep_max_concurrency)]
        kind = "concurrency"
    elif bench.rates:
        loads, kind = list(bench.rates), "rate"
    else:
        loads, kind = [float(c) for c in bench.concurrency], "concurrency"
    points = len(loads)
    if point_s_override is not None:
        return points, point_s_override, Provenance(kind="user", source=f"--point-seconds {point_s_override:g}")
    if bench.duration_s is not None:
        drain = bound or 0.0
        how = f"--duration {bench.duration_s:g} s" + (f" + one request's SLO bound ({bound_how})" if bound else "")
        return points, bench.duration_s + drain, Provenance(kind="user", source=how)
    prompts = bench.num_prompts or 32
    if kind == "rate":
        seconds = [prompts / rate + (bound or 0.0) for rate in loads]
        how = f"{prompts} prompts / offered rate" + (f" + one request ({bound_how})" if bound else "")
        return points, sum(seconds) / points, Provenance(kind="estimated", source=how)
    if bound is None:
        return points, DEFAULT_POINT_S, Provenance(
            kind="estimated", source=f"assumed {DEFAULT_POINT_S:g} s per point (no --duration and no latency SLO "
            "bounds a request; set --point-seconds)")
    seconds = [math.ceil(prompts / c) * bound for c in loads]
    how = (f"upper bound: ceil({prompts} prompts / concurrency) requests in a row x the SLO's request time "
           f"({bound_how})" + (", sweep counted at its most points" if bench.sweep else ""))
    return points, sum(seconds) / points, Provenance(kind="estimated", source=how)


def gpu_price(
    target: CampaignTarget, prices: PriceCatalog, prices_label: str
) -> tuple[float | None, Provenance | None]:
    """$/GPU-hour of the target's instance row, else the cheapest row of its GPU on its market (in its cloud when
    set): a reference figure for a fleet the user owns."""
    rows = price_rows(prices, target.gpu, target.market, target.cloud, target.region)
    if target.instance_type:
        rows = [r for r in rows if r.instance_type == target.instance_type] or rows
    else:
        rows = sorted(rows, key=lambda r: r.usd_per_gpu_hour)
    if not rows:
        return None, None
    row = rows[0]
    reference = "" if target.instance_type else "cheapest listed, as a reference; "
    return row.usd_per_gpu_hour, Provenance(
        kind="catalog", source=f"{prices_label}: {row.cloud} {row.region} {row.instance_type} {row.market} "
        f"({reference}{row.source})", date=row.retrieved)


def estimate_job(
    bench: BenchmarkSettings, target: CampaignTarget, gpu: GpuSpec, prices: PriceCatalog, prices_label: str,
    startup_s: float, startup_provenance: Provenance, point_s_override: float | None = None,
) -> CostEstimate:
    points, point_s, duration_prov = run_seconds(bench, point_s_override)
    bound, _ = request_seconds_bound(bench)
    warmup_s = bench.warmup * (bound or 0.0)
    share = slice_share(gpu, target.slice)
    hours = (startup_s + warmup_s + points * point_s) / 3600 * share
    price, price_prov = gpu_price(target, prices, prices_label)
    return CostEstimate(
        startup_s=startup_s, points=points, point_s=round(point_s, 3), gpu_share=round(share, 4),
        gpu_hours=round(hours, 4), usd_per_gpu_hour=price, usd=None if price is None else round(hours * price, 4),
        startup_provenance=startup_provenance, duration_provenance=duration_prov, price_provenance=price_prov,
    )


def startup(minutes: float | None) -> tuple[float, Provenance]:
    if minutes is not None:
        return minutes * 60, Provenance(kind="user", source=f"--startup-minutes {minutes:g}")
    return DEFAULT_STARTUP_S, Provenance(
        kind="estimated", source=f"assumed {DEFAULT_STARTUP_S / 60:g} min per job: image pull, vlmopt install, "
        "checkpoint download, vLLM load and CUDA graph capture (set --startup-minutes; collect measures it)")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def hours_between(start: str | None, end: str | None, share: float) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None or b < a:
        return None
    return round((b - a).total_seconds() / 3600 * share, 4)
