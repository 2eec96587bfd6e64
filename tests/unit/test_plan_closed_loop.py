"""The step simulation of vLLM V1's scheduler (closed_loop.py) against hand calculations: cohorts of closed-loop
clients prefilled together, chunked prefill under the token budget, the API server's FIFO; the open-loop formulas
(latency.py) by hand at a rate and against the same simulation fed Poisson arrivals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.plan import closed_loop, options, perf
from vlmopt.plan.latency import Coefficients
from vlmopt.plan.variants import default_variants
from vlmopt.schemas.common import Provenance

pytestmark = pytest.mark.unit

# A zero-cost roofline: every time below is the hand-set overheads. Step 10 ms + 1 ms per decoding sequence;
# G = 20 ms of prefill (admission) per request.
FREE_DEVICE = perf.DeviceShare("x", "whole", bandwidth_gbs=1e12, tflops={"bf16": 1e9}, memory_gib=80)
FREE_MODEL = perf.ModelCost(decode_weight_bytes=0.0, kv_bytes_per_token=0.0, lm_params=0.0, vision_params=0.0,
                            attention_width=0.0)
EFF = perf.Efficiency(bandwidth=1.0, compute=1.0, step_s=0.010, step_seq_s=0.001, request_s=0.020)
EST = Provenance(kind="estimated", source="test")


def _engine(shape: perf.RequestShape, host: perf.HostCosts = perf.NO_HOST, budget: int | None = None,
            max_batch: float = 64) -> closed_loop.Engine:
    coef = Coefficients.of([(FREE_MODEL, shape, FREE_DEVICE, max_batch)], EFF, [host], [budget])
    return closed_loop.Engine.of(coef, 0)


def test_closed_loop_clients_are_prefilled_as_one_cohort() -> None:
    # 4 clients send at t=0: one step prefills all four (10 ms + 4 x 20 ms = 90 ms: every TTFT), then 10 decode
    # steps at batch 4 (14 ms each); all finish at 230 ms and come back together, so the second round repeats it.
    shape = perf.RequestShape(input_tokens=100, output_tokens=11)
    trace = closed_loop.simulate(_engine(shape), clients=4, requests=8)
    assert [f * 1e3 for f in trace.first] == pytest.approx([90, 90, 90, 90, 320, 320, 320, 320])
    assert [d * 1e3 for d in trace.done] == pytest.approx([230] * 4 + [460] * 4)
    p = trace.prediction()
    assert p.ttft_p50_ms == pytest.approx(90) and p.tpot_p50_ms == pytest.approx(14)
    assert p.rate_rps == pytest.approx(8 / 0.460)
    # A model that spread the others' prefills over every decode step would give each request one prefill of its
    # own before its first token: 10 + 20 = 30 ms, a third of what the scheduler does.


def test_chunked_prefill_takes_what_the_token_budget_leaves() -> None:
    # Two 150-token prompts, budget 200 tokens a step. Step 1: A whole (150) and B's first 50: 10 ms + 20 ms x
    # 200/150 = 36.67 ms -> A's first token. Step 2: A decodes (1 token of the budget), B's last 100 tokens:
    # 10 + 1 + 20 x 100/150 = 24.33 ms -> B's first token at 61.0 ms.
    shape = perf.RequestShape(input_tokens=150, output_tokens=11)
    trace = closed_loop.simulate(_engine(shape, budget=200), clients=2, requests=2)
    assert [f * 1e3 for f in trace.first] == pytest.approx([36.667, 61.0], abs=1e-3)
    # Then both decode at batch 2 (12 ms a step) until A's 11th token: 9 more steps -> 169 ms; B's last alone.
    assert [d * 1e3 for d in trace.done] == pytest.approx([169.0, 180.0], abs=1e-3)


def test_the_api_server_takes_requests_one_at_a_time() -> None:
    # One API server, 10 ms before the engine per request: three clients sending at t=0 reach the engine at 10,
    # 20 and 30 ms. The first is prefilled alone (10 + 20 ms, first token at 40 ms); the other two arrive during
    # that step and are prefilled together in the next (11 ms + 2 x 20 ms: first tokens at 91 ms).
    host = perf.HostCosts(request_s=0.010, image_s=0.0, output_token_s=0.0, api_server_count=1, source="test")
    shape = perf.RequestShape(input_tokens=100, output_tokens=11)
    trace = closed_loop.simulate(_engine(shape, host), clients=3, requests=3)
    assert [f * 1e3 for f in trace.first] == pytest.approx([40.0, 91.0, 91.0])


def test_open_loop_ttft_by_hand() -> None:
    # X = 4 req/s, no host: b = 0.4 / 0.88 decoding; t_dec(b) = 10 + b ms; the engine is busy (something running)
    # with probability 1 - e^-b. Steps are t_dec + 20 ms x (prefills they carry), Poisson in number: mean
    # t_dec / (1 - rho), variance G^2 X mean / (1 - rho^2); the request arrives in a length-biased step (mean +
    # variance / mean), waits out half of it, and is prefilled in the next with the others that arrived in it.
    rate, g, rho = 4.0, 0.020, 0.08
    b = 0.4 / 0.88
    t = 0.010 + 0.001 * b
    busy = 1 - math.exp(-b)
    mean = t / (1 - rho)
    var = g**2 * rate * mean / (1 - rho**2)
    biased = mean + var / mean
    others = busy * rate * biased
    ttft = busy * biased * 0.5 + t + g * (others + 1)
    shape = perf.RequestShape(input_tokens=100, output_tokens=11)
    p = perf.predict(FREE_MODEL, shape, FREE_DEVICE, EFF, rate, max_batch=64)
    assert p.ttft_p50_ms == pytest.approx(ttft * 1e3, rel=1e-9)


@pytest.mark.parametrize("load", [0.2, 0.5, 0.8])
def test_open_loop_formulas_agree_with_the_simulation_under_poisson_arrivals(load: float) -> None:
    """Qwen2.5-VL-7B bf16 on an H100 with four API servers, at 20/50/80 % of its sustainable rate: the closed-form
    percentiles the planner's capacities come from are within 20 % of the step simulation fed 4000 Poisson
    arrivals (above 80 % the simulation's TTFT p95 tail grows faster: docs/cost-model.md)."""
    arch = load_model_arch("qwen2.5-vl-7b")
    gpu = load_gpu_catalog().get("h100-sxm-80gb")
    bf16 = next(v for v in default_variants(arch.name, arch.hf_id) if v.name == "bf16")
    cost = options.model_cost(arch, bf16, gpu)
    shape = options.request_shape(arch, 256, 128, 1, (448, 448))
    share = perf.device_share(gpu)
    host = perf.HostCosts(request_s=3e-3, image_s=0.02, output_token_s=50e-6, api_server_count=4, source="test")
    eff = perf.Efficiency()
    coef = Coefficients.of([(cost, shape, share, 256)], eff, [host], [8192])
    sustainable = perf.estimate_capacity(cost, shape, share, eff, {"tpot_p95_ms": 1e9}, 256, EST, host,
                                         8192).capacity_rps
    rate = load * sustainable
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1 / rate, 4000))
    simulated = closed_loop.simulate(closed_loop.Engine.of(coef, 0), 0, 0, list(arrivals)).prediction(skip=500)
    formula = perf.predict(cost, shape, share, eff, rate, 256, host, 8192)
    assert formula is not None
    for key in ("ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "tpot_p95_ms"):
        assert formula.value(key) == pytest.approx(simulated.value(key), rel=0.20), key
