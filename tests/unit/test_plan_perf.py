"""Performance model: latency grows with load, capacity sits exactly at the SLO, a MIG slice gets its share, the
efficiency fit recovers known factors, and measured profiles win over the roofline."""

from __future__ import annotations

import itertools

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan import perf
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.planner import make_plan
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import Provenance, load_model
from vlmopt.schemas.profile import BenchmarkProfile, DeviceInfo, EngineInfo, LoadPoint, WorkloadSpec
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit

COST = perf.ModelCost(decode_weight_bytes=15.2e9, kv_bytes_per_token=57344, lm_params=7.6e9,
                      vision_params=0.67e9, attention_width=28 * 3584)
SHAPE = perf.RequestShape(input_tokens=256, output_tokens=128, images_per_request=1, image_tokens=256,
                          vision_patches=1024)
EST = Provenance(kind="estimated", source="test")


@pytest.fixture(scope="module")
def h100():
    return load_gpu_catalog().get("h100-sxm-80gb")


def test_latency_grows_with_load_and_saturates(h100) -> None:
    share = perf.device_share(h100)
    eff = perf.Efficiency()
    preds = [perf.predict(COST, SHAPE, share, eff, r, 256) for r in (0.1, 2, 8, 16)]
    assert all(p is not None for p in preds)
    for a, b in itertools.pairwise(preds):
        assert b.ttft_p95_ms >= a.ttft_p95_ms and b.tpot_p50_ms >= a.tpot_p50_ms and b.batch > a.batch
        assert a.ttft_p95_ms >= a.ttft_p50_ms
    assert perf.predict(COST, SHAPE, share, eff, 1e6, 256) is None


def test_decode_step_at_batch_one_is_overhead_plus_weights_over_bandwidth(h100) -> None:
    share = perf.device_share(h100)
    eff = perf.Efficiency(bandwidth=0.5, compute=0.5, step_s=1e-3, step_seq_s=20e-6)
    step = perf.decode_step_seconds(COST, SHAPE, share, eff, 1.0)
    # 1 ms step + 20 us for the one sequence + (15.2 GB + 704 tokens x 56 KiB) / (3350 GB/s x 0.5)
    expected = 1e-3 + 20e-6 + (COST.decode_weight_bytes + SHAPE.mean_context * COST.kv_bytes_per_token) / (3350e9 * 0.5)
    assert step == pytest.approx(expected)


def test_mig_slice_gets_its_share(h100) -> None:
    prof = h100.mig_profile("3g.40gb")
    whole, part = perf.device_share(h100), perf.device_share(h100, prof)
    assert part.bandwidth_gbs == pytest.approx(whole.bandwidth_gbs * 4 / 8)
    assert part.tflops["bf16"] == pytest.approx(whole.tflops["bf16"] * 3 / 7)
    assert part.memory_gib == prof.memory_gib
    eff, slo = perf.Efficiency(), {"ttft_p95_ms": 2000, "tpot_p95_ms": 60}
    cap_whole = perf.estimate_capacity(COST, SHAPE, whole, eff, slo, 256, EST).capacity_rps
    cap_part = perf.estimate_capacity(COST, SHAPE, part, eff, slo, 256, EST).capacity_rps
    assert 0 < cap_part < cap_whole


def test_capacity_is_the_highest_rate_meeting_every_slo_key(h100) -> None:
    share, eff = perf.device_share(h100), perf.Efficiency()
    slo = {"ttft_p95_ms": 400, "tpot_p95_ms": 40, "e2el_p50_ms": 8000}
    cap = perf.estimate_capacity(COST, SHAPE, share, eff, slo, 256, EST)
    assert cap.meets_slo and cap.capacity_rps > 0
    at = perf.predict(COST, SHAPE, share, eff, cap.capacity_rps, 256)
    above = perf.predict(COST, SHAPE, share, eff, cap.capacity_rps * 1.02, 256)
    assert perf.meets(at, slo)
    assert above is None or not perf.meets(above, slo)
    assert cap.binding_key in (*slo, "throughput")


def test_slo_below_zero_load_latency_gives_zero_capacity(h100) -> None:
    cap = perf.estimate_capacity(COST, SHAPE, perf.device_share(h100), perf.Efficiency(), {"tpot_p95_ms": 1},
                                 256, EST)
    assert cap.capacity_rps == 0 and not cap.meets_slo
    assert "tpot_p95_ms" in cap.reason and "zero load" in cap.reason


def test_fit_recovers_known_efficiency_and_reports_error(h100) -> None:
    truth = perf.Efficiency(bandwidth=0.42, compute=0.27)
    obs = []
    for gpu_slice in (None, h100.mig_profile("2g.20gb")):
        share = perf.device_share(h100, gpu_slice)
        for rate in (0.2, 1.0, 2.0, 4.0):
            p = perf.predict(COST, SHAPE, share, truth, rate, 64)
            if p is not None:
                obs.append(perf.Observation(COST, SHAPE, share, 64, rate, p.ttft_p50_ms, p.tpot_p50_ms))
    assert len(obs) >= 6
    fitted = perf.fit_efficiency(obs, profiles=2)
    assert fitted.bandwidth == pytest.approx(0.42, rel=0.02)
    assert fitted.compute == pytest.approx(0.27, rel=0.02)
    assert fitted.mape is not None and fitted.mape < 0.01
    assert fitted.mape_prior is not None and fitted.mape_prior > fitted.mape
    assert "fitted to" in fitted.source


def test_no_observation_keeps_the_labelled_prior() -> None:
    eff = perf.fit_efficiency([])
    assert eff.source == "prior" and eff.mape is None
    assert (eff.bandwidth, eff.compute) == (perf.PRIOR_BANDWIDTH_EFFICIENCY, perf.PRIOR_COMPUTE_EFFICIENCY)


def _profile(points: list[dict]) -> BenchmarkProfile:
    return BenchmarkProfile(
        model="qwen2.5-vl-7b", variant="awq",
        device=DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", catalog_id="h100-sxm-80gb"),
        engine=EngineInfo(version="0.32.0"), workload=WorkloadSpec(input_tokens=256, output_tokens=128),
        points=[LoadPoint(**p) for p in points], run_id="r1", finished="2026-11-20",
    )


def test_measured_capacity_takes_the_best_point_meeting_the_slo() -> None:
    prof = _profile([
        {"label": "c1", "completed": 10, "request_throughput": 1.0, "p95_ttft_ms": 100, "p95_tpot_ms": 10},
        {"label": "c4", "completed": 10, "request_throughput": 3.5, "p95_ttft_ms": 300, "p95_tpot_ms": 20},
        {"label": "c16", "completed": 10, "request_throughput": 6.0, "p95_ttft_ms": 900, "p95_tpot_ms": 35},
        {"label": "c32", "completed": 10, "failed": 2, "request_throughput": 7.0, "p95_ttft_ms": 100,
         "p95_tpot_ms": 10},
    ])
    cap = perf.measured_capacity(prof, {"ttft_p95_ms": 500, "tpot_p95_ms": 30}, "profiles/x@h100.json")
    assert cap.capacity_rps == 3.5 and cap.meets_slo
    assert cap.provenance.kind == "measured" and cap.provenance.source == "profiles/x@h100.json"
    missing = perf.measured_capacity(prof, {"e2el_p95_ms": 500}, "p")
    assert missing.capacity_rps == 0 and "percentiles" in missing.reason


def test_a_matching_profile_makes_the_option_measured_in_the_plan() -> None:
    """Through the planner's batched option evaluation: the profile's (variant, GPU, slice) option takes the
    measured capacity, the same variant on other slices stays a roofline estimate."""
    prof = _profile([
        {"label": "c4", "completed": 10, "request_throughput": 3.5, "p95_ttft_ms": 300, "p95_tpot_ms": 20,
         "median_ttft_ms": 200, "median_tpot_ms": 15},
        {"label": "c16", "completed": 10, "request_throughput": 6.0, "p95_ttft_ms": 900, "p95_tpot_ms": 35,
         "median_ttft_ms": 600, "median_tpot_ms": 25},
    ]).model_copy(update={"workload": WorkloadSpec(input_tokens=256, output_tokens=128, images_per_request=0)})
    wl = Workload(name="m", services=[{
        "name": "chat", "model": "qwen2.5-vl-7b", "variants": ["awq"], "peak_rps": 5, "input_tokens": 256,
        "output_tokens": 128, "images_per_request": 0, "slo": {"ttft_p95_ms": 500, "tpot_p95_ms": 30}}])
    wl.constraints.gpus = ["h100-sxm-80gb"]
    prices = load_model(PriceCatalog, data_file("prices.yaml"))
    inputs = PlanInputs(workload=wl, profiles={"profiles/x@h100.json": prof}, gpu_catalog=load_gpu_catalog(),
                        price_catalog=prices)
    plan = make_plan(inputs, PlanningOptions(attribute_levers=False))
    whole = [c for c in plan.candidates if c.slice == "whole"]
    assert whole and all(c.capacity_rps == 3.5 and c.provenance.kind == "measured" for c in whole)
    sliced = [c for c in plan.candidates if c.slice != "whole" and c.meets_slo]
    assert sliced and all(c.provenance.kind == "estimated" for c in sliced)
    assert any(p.kind == "measured" for p in plan.inputs)
    assert "fitted to" in next(p.detail for p in plan.inputs if p.source == "vlmopt roofline performance model")
