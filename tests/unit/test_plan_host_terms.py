"""The performance model's host-side and engine-overhead terms, each against a hand calculation; a case where host
preprocessing is the binding limit; chunked prefill; the closed-loop solve; host sizing; error bands."""

from __future__ import annotations

import itertools
import math

import pytest

from vlmopt.plan import bands, perf
from vlmopt.plan import host as host_model
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.profile import (
    BenchmarkProfile,
    DeviceInfo,
    EngineInfo,
    HostCostMeasurement,
    ImageHostCost,
    LoadPoint,
    ServerProbe,
    WorkloadSpec,
)

pytestmark = pytest.mark.unit

EST = Provenance(kind="estimated", source="test")
# A device and model whose roofline is exactly zero-cost, so every term below is the hand-set overhead alone.
FREE_DEVICE = perf.DeviceShare("x", "whole", bandwidth_gbs=1e12, tflops={"bf16": 1e9}, memory_gib=80)
FREE_MODEL = perf.ModelCost(decode_weight_bytes=0.0, kv_bytes_per_token=0.0, lm_params=0.0, vision_params=0.0,
                            attention_width=0.0)
SHAPE = perf.RequestShape(input_tokens=100, output_tokens=11, images_per_request=1, image_tokens=50,
                          vision_patches=200)
EFF = perf.Efficiency(bandwidth=1.0, compute=1.0, step_s=0.010, step_seq_s=0.001, request_s=0.020)
HOST = perf.HostCosts(request_s=0.005, image_s=0.040, output_token_s=0.001, api_server_count=1, source="test")


def test_zero_load_latencies_by_hand() -> None:
    p = perf.predict(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, 1e-9, max_batch=64, host=HOST)
    # TTFT = API server before the engine (5 ms request + 40 ms image) + admission 20 ms + one step (10 ms at b=0)
    #        + streaming the first token 1 ms = 76 ms; nothing else runs, so no half step of waiting.
    assert p.ttft_p50_ms == pytest.approx(76.0, rel=1e-6)
    # TPOT = a step with the request alone in the batch: 10 ms + 1 ms for its sequence.
    assert p.tpot_p50_ms == pytest.approx(11.0, rel=1e-6)
    # E2EL = TTFT + 10 more tokens x TPOT.
    assert p.e2el_p50_ms == pytest.approx(76.0 + 10 * 11.0, rel=1e-6)


def test_decode_batch_and_tpot_at_a_rate_by_hand() -> None:
    # X = 4 req/s: prefill share rho = 4 x 20 ms = 0.08; decode tokens/s T = 4 x 10 = 40.
    # b (1 - rho) = T (10 ms + 1 ms b)  ->  b = 40 x 0.010 / (0.92 - 40 x 0.001) = 0.4 / 0.88.
    p = perf.predict(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, 4.0, max_batch=64, host=HOST)
    b = 0.4 / 0.88
    assert p.batch == pytest.approx(b, rel=1e-9)
    assert p.prefill_utilisation == pytest.approx(0.08)
    # A decoding request sees itself and the b others: step 10 ms + 1 ms x (b + 1), stretched by 1 / (1 - rho).
    assert p.tpot_p50_ms == pytest.approx((0.010 + 0.001 * (b + 1)) / 0.92 * 1e3, rel=1e-9)
    # The API server does 5 + 40 + 11 x 1 = 56 ms per request: utilisation 4 x 0.056.
    assert p.host_utilisation == pytest.approx(0.224)


def test_tokenisation_and_detokenisation_costs_add_where_they_run() -> None:
    base = perf.predict(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, 1e-9, 64, host=HOST)
    slower = perf.HostCosts(request_s=0.015, image_s=0.040, output_token_s=0.003, source="test")
    p = perf.predict(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, 1e-9, 64, host=slower)
    # +10 ms of tokenisation before the engine and +2 ms to stream the first token: TTFT +12 ms; TPOT unchanged at
    # zero load (the API server keeps up), so E2EL moves by the same 12 ms.
    assert p.ttft_p50_ms - base.ttft_p50_ms == pytest.approx(12.0, rel=1e-6)
    assert p.tpot_p50_ms == pytest.approx(base.tpot_p50_ms)
    assert slower.seconds_per_request(SHAPE) == pytest.approx(0.015 + 0.040 + 11 * 0.003)


def test_host_preprocessing_is_the_binding_limit() -> None:
    # A fast accelerator (the engine could take ~48 req/s of prefill) behind one API server that spends
    # 5 + 40 + 11 = 56 ms of CPU per request: it saturates at 1 / 0.056 = 17.9 req/s whatever the GPU does.
    slo = {"ttft_p95_ms": 10_000, "tpot_p95_ms": 1_000}
    cap = perf.estimate_capacity(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, slo, 256, EST, host=HOST)
    assert cap.binding_key == "host"
    # Just below the cap: near it the API server's queue (M/M/1, p95 wait 9.6 s at 98.6 % busy) meets the 10 s SLO.
    assert 0.97 / 0.056 < cap.capacity_rps < 1 / 0.056
    assert "API server" in cap.reason
    # Two API servers double it (the engine is far from its own limit), as --api-server-count does.
    two = perf.estimate_capacity(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, slo, 256, EST,
                                 host=perf.HostCosts(0.005, 0.040, 0.001, api_server_count=2, source="test"))
    assert two.capacity_rps > 1.8 * cap.capacity_rps  # nearly twice: the engine now starts to queue too
    assert two.binding_key != "host"
    # Without host terms the same replica would claim the engine's own limit (its prefill queue, 20 ms a request).
    free = perf.estimate_capacity(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, slo, 256, EST)
    assert free.capacity_rps > 1.8 * cap.capacity_rps and free.binding_key != "host"


def test_chunked_prefill_adds_a_step_per_extra_chunk() -> None:
    long_prompt = perf.RequestShape(input_tokens=5000, output_tokens=11)
    unchunked = perf.predict(FREE_MODEL, long_prompt, FREE_DEVICE, EFF, 1e-9, 64)
    chunked = perf.predict(FREE_MODEL, long_prompt, FREE_DEVICE, EFF, 1e-9, 64, max_num_batched_tokens=2048)
    # 5000 tokens in chunks of 2048 (nothing else decoding): ceil(5000 / 2048) = 3 steps, 2 more than one; each
    # extra step is one 10 ms engine step.
    assert chunked.ttft_p50_ms - unchunked.ttft_p50_ms == pytest.approx(2 * 10.0, rel=1e-6)


def test_closed_loop_single_client_is_one_request_at_a_time() -> None:
    # One client: throughput = 1 / E2EL, nothing queues, and the answer is the zero-load latency.
    p = perf.predict_closed_loop(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, 1, 64, HOST)
    assert p.ttft_p50_ms == pytest.approx(76.0, rel=1e-3)
    assert p.rate_rps * p.e2el_p50_ms / 1e3 == pytest.approx(1.0, rel=2e-2)  # the median is the mean here


def test_closed_loop_throughput_grows_then_saturates() -> None:
    rates = [perf.predict_closed_loop(FREE_MODEL, SHAPE, FREE_DEVICE, EFF, n, 64, HOST).rate_rps
             for n in (1, 2, 4, 8, 16, 64)]
    assert all(b > a for a, b in itertools.pairwise(rates[:4]))
    # From 8 clients on the one API server (56 ms of CPU per request) is the bottleneck: flat, below its cap.
    assert max(rates[3:]) < HOST.rate_cap(SHAPE) and min(rates[3:]) > 0.85 * HOST.rate_cap(SHAPE)
    assert max(rates[3:]) - min(rates[3:]) < 0.05 * max(rates[3:])


def test_host_sizing_by_hand() -> None:
    # 30 req/s x 56 ms = 1.68 cores of API-server work; at most 70 % per server -> ceil(2.4) = 3 servers;
    # cores = 1 engine core + 1.68.
    sizing = host_model.host_sizing(HOST, SHAPE, 30.0)
    assert sizing.api_server_count == 3
    assert sizing.cpu_cores == pytest.approx(2.68)
    assert sizing.preprocess_ms_per_image == pytest.approx(40.0)
    assert sizing.provenance.kind == "estimated" or sizing.provenance.kind == "measured"
    assert host_model.host_sizing(HOST, SHAPE, 0.0).api_server_count == 1


def _measurement() -> HostCostMeasurement:
    return HostCostMeasurement(
        how="test", processor="LlavaProcessor", tokenize_cpu_s=0.002, detokenize_cpu_s_per_token=20e-6,
        images=[ImageHostCost(width=100, height=100, decode_cpu_s=0.001, preprocess_cpu_s=0.009),
                ImageHostCost(width=300, height=100, decode_cpu_s=0.003, preprocess_cpu_s=0.017)])


def test_measured_image_cost_interpolates_in_pixels() -> None:
    m = _measurement()
    # 10 ms at 10k pixels, 20 ms at 30k: 5 ms + 0.5 us per pixel -> 20k pixels = 15 ms; measured sizes exactly.
    assert host_model.image_seconds(m, (200, 100)) == pytest.approx(0.015)
    assert host_model.image_seconds(m, (300, 100)) == pytest.approx(0.020)
    costs = host_model.host_costs_from_measurement(m, (200, 100))
    assert costs.request_s == pytest.approx(host_model.HTTP_REQUEST_S + 0.002)
    assert costs.output_token_s == pytest.approx(20e-6 + host_model.SSE_TOKEN_S)


def test_api_server_work_after_admission_is_not_charged_before_the_engine() -> None:
    # The probe's text request (16 tokens) cost the API server 30 ms of CPU; 40 ms for the image one. Before the
    # engine: HTTP prior + 2 ms tokenising, and per image max(40 - 30, 10 ms processor) = 10 ms. The rest of the text
    # request, 30 - 4 = 26 ms, ran after admission (one engine step's outputs per token at one client): 1.625 ms
    # per output token, not 26 ms that would space the requests handed to the engine.
    m = _measurement().model_copy(update={"server": ServerProbe(
        requests_each=3, output_tokens=16, image_size="100x100", text_api_server_cpu_s=0.030,
        image_api_server_cpu_s=0.040)})
    costs = host_model.host_costs_from_measurement(m, (100, 100))
    assert costs.request_s == pytest.approx(host_model.HTTP_REQUEST_S + 0.002)
    assert costs.image_s == pytest.approx(0.010)
    assert costs.output_token_s == pytest.approx((0.030 - host_model.HTTP_REQUEST_S - 0.002) / 16)
    # With load points, the per-request CPU they measured (4 and 8 req/s at 0.2 and 0.4 cores: 50 ms, no idle part)
    # less the 14 ms before the engine is spread over their 32 output tokens; their run-queue wait (20 % and 40 %:
    # 30 %) stretches the 14 ms before the engine to 20 ms of wall time.
    profile = _profile([{"label": "c1", "request_throughput": 4.0, "api_server_cpu_util": 0.2,
                         "api_server_cpu_wait_share": 0.2},
                        {"label": "c4", "request_throughput": 8.0, "api_server_cpu_util": 0.4,
                         "api_server_cpu_wait_share": 0.4}])
    profile.workload.output_tokens, profile.workload.images_per_request = 32, 1
    load = host_model.api_server_load(profile)
    assert load is not None and load.per_request_s == pytest.approx(0.050) and load.cpu_wait_share == pytest.approx(0.3)
    costs = host_model.host_costs_from_measurement(m, (100, 100), load=load)
    shape = perf.RequestShape(input_tokens=10, output_tokens=32, images_per_request=1)
    assert costs.output_token_s == pytest.approx((0.050 - 0.014) / 32)
    assert costs.seconds_per_request(shape) == pytest.approx(0.050)  # the capacity cap keeps the measured CPU
    assert costs.pre_engine_s(shape) == pytest.approx(0.014)
    assert costs.pre_engine_wall_s(shape) == pytest.approx(0.014 / 0.7)


def _profile(points: list[dict], **extra) -> BenchmarkProfile:
    return BenchmarkProfile(model="m", variant="bf16", device=DeviceInfo(kind="cpu", name="cpu"),
                            engine=EngineInfo(version="0.32.0"), workload=WorkloadSpec(input_tokens=10),
                            points=[LoadPoint(**p) for p in points], run_id="r", **extra)


def test_measured_band_is_the_per_request_spread() -> None:
    # 100 requests with E2EL mean 1000 ms, std 200 ms: relative SE of the mean = 0.2 / 10 = 2 %; 95 % -> +-3.92 %.
    point = {"label": "c4", "completed": 100, "request_throughput": 4.0, "mean_e2el_ms": 1000.0,
             "std_e2el_ms": 200.0}
    profile = _profile([point])
    low, high, how = bands.measured_band(profile, profile.points[0])
    assert low == pytest.approx(4.0 * (1 - 1.96 * 0.02), rel=1e-3)
    assert high == pytest.approx(4.0 * (1 + 1.96 * 0.02), rel=1e-3)
    assert "100 requests" in how
    # Repeats spreading wider than that win: 4.0 and 3.0 -> mean 3.5, SE 0.5 -> 14.3 % of the mean.
    low, _, how = bands.measured_band(profile, profile.points[0], repeats=[3.0])
    assert low == pytest.approx(4.0 * (1 - 1.96 * 0.5 / 3.5), rel=1e-3)
    assert "repeated" in how


def test_estimated_band_comes_from_the_validation() -> None:
    # The model overestimated by up to 1.25x and underestimated by up to 0.8x: the truth lies in [10/1.25, 10/0.8].
    errors = bands.ValidationErrors(figures=[bands.ErrorFigure(
        kind="calibrated", ratio_p10=0.8, ratio_p90=1.25, capacity_mape=0.1, cases=8, how="test", date="2026-11-30")])
    low, high, how = bands.estimated_band(10.0, "calibrated", errors)
    assert (low, high) == pytest.approx((8.0, 12.5))
    assert "8 held-out" in how
    assert bands.estimated_band(10.0, "prior", errors)[0] is None


def test_engine_prior_overheads_are_labelled_and_small_on_a_gpu() -> None:
    eff = perf.Efficiency()
    assert eff.source == "prior" and eff.step_s == perf.PRIOR_STEP_S
    assert math.isclose(eff.request_s, perf.PRIOR_ENGINE_REQUEST_S)
