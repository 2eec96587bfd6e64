"""The planner loop: `vlmopt plan --profiles CAMPAIGN_DIR/profiles` takes the capacities a campaign measured, matched
by the device names NVML reports inside a pod (a MIG slice as the parent GPU + profile, or as the MIG device's own
name), and the plan and its report say which job measured each capacity."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vlmopt.cli import app
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan.inputs import PlanInputs, PlanningOptions, load_plan_inputs
from vlmopt.plan.planner import make_plan
from vlmopt.schemas import BenchmarkProfile, DeviceInfo, EngineInfo, LoadPoint, WorkloadSpec, save_model
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

JOB_3G = "qwen-c1/qwen-c1-awq-h100-sxm-80gb-3g-40gb"
WORKLOAD = {
    "name": "loop", "constraints": {"gpus": ["h100-sxm-80gb"]},
    "services": [{"name": "chat", "model": "qwen2.5-vl-7b", "variants": ["awq"], "peak_rps": 5, "input_tokens": 256,
                  "output_tokens": 128, "images_per_request": 0, "slo": {"ttft_p95_ms": 500, "tpot_p95_ms": 30}}],
}


def _profile(device: DeviceInfo, job: str | None, rate: float, run_id: str) -> BenchmarkProfile:
    points = [LoadPoint(label=f"c{c}", completed=20, request_throughput=rate * c / 4, p95_ttft_ms=80.0 * c,
                        p95_tpot_ms=5.0 * c, median_ttft_ms=60.0 * c, median_tpot_ms=4.0 * c) for c in (1, 2, 4)]
    return BenchmarkProfile(
        model="qwen2.5-vl-7b", variant="awq", variant_method="awq", variant_scheme="W4A16_ASYM", device=device,
        engine=EngineInfo(version="0.32.0"),
        workload=WorkloadSpec(input_tokens=256, output_tokens=128, images_per_request=0), points=points,
        run_id=run_id, complete=True, finished="2026-11-20T09:00:00+00:00", campaign_job=job)


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "campaigns" / "qwen-c1" / "profiles" / "qwen2.5-vl-7b"
    # what the benchmark records inside a pod given nvidia.com/mig-3g.40gb (tests/unit/test_bench_device.py)
    in_pod = DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", mig_profile="3g.40gb", memory_gib=39.5,
                        catalog_id="h100-sxm-80gb")
    # a profile from another tool: only the MIG device's NVML name, no catalog match recorded
    foreign = DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3 MIG 2g.20gb")
    save_model(_profile(in_pod, JOB_3G, 4.0, "20261120T0800-aa11bb"), folder / "awq@h100-sxm-80gb-mig-3g_40gb.json")
    save_model(_profile(foreign, None, 2.0, "20261120T0810-cc22dd"), folder / "awq@nvidia-h100-2g.json")
    return folder.parent


def test_measured_slices_count_for_their_mig_profile_and_name_their_job(profiles: Path) -> None:
    inputs = load_plan_inputs(profiles_dir=profiles)
    sources = sorted(inputs.profiles)
    assert any(s.endswith(f"awq@h100-sxm-80gb-mig-3g_40gb.json (job {JOB_3G}, run 20261120T0800-aa11bb)")
               for s in sources), sources
    foreign = next(p for p in inputs.profiles.values() if p.campaign_job is None)
    assert (foreign.device.catalog_id, foreign.device.mig_profile) == ("h100-sxm-80gb", "2g.20gb")

    wl = Workload.model_validate(WORKLOAD)
    plan = make_plan(PlanInputs(workload=wl, profiles=inputs.profiles, gpu_catalog=load_gpu_catalog(),
                                price_catalog=load_model(PriceCatalog, data_file("prices.yaml"))),
                     PlanningOptions(attribute_levers=False))
    by_slice = {c.slice: c for c in plan.candidates if c.market == "on_demand"}
    three, two = by_slice["3g.40gb"], by_slice["2g.20gb"]
    assert three.provenance.kind == "measured" and three.capacity_rps == pytest.approx(4.0)
    assert f"(job {JOB_3G}, run 20261120T0800-aa11bb)" in three.provenance.source
    assert two.provenance.kind == "measured" and two.capacity_rps == pytest.approx(2.0)
    assert by_slice["whole"].provenance.kind == "estimated"  # nobody measured the whole GPU
    measured_inputs = [p for p in plan.inputs if p.kind == "measured"]
    assert any(JOB_3G in p.source for p in measured_inputs)


def test_plan_cli_report_shows_which_job_measured_each_capacity(profiles: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole H100 was measured too (another job): every option the plan can choose is measured, and the report
    names the job behind each capacity, chosen or not."""
    whole = DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", memory_gib=79.6, catalog_id="h100-sxm-80gb")
    job_whole = "qwen-c1/qwen-c1-awq-h100-sxm-80gb"
    save_model(_profile(whole, job_whole, 9.0, "20261120T0820-ee33ff"),
               profiles / "qwen2.5-vl-7b" / "awq@h100-sxm-80gb.json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wl.yaml").write_text(yaml.safe_dump(WORKLOAD))
    result = CliRunner().invoke(app, ["plan", "--workload", "wl.yaml", "--profiles", str(profiles), "--out",
                                      "deploy/loop", "--report-dir", "reports/loop"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "reports/loop/inputs.csv") as fh:
        rows = list(csv.DictReader(fh))
    capacity = [r for r in rows if r["role"].startswith("capacity of awq on h100-sxm-80gb")]
    assert capacity and all(r["kind"] == "measured" for r in capacity)
    assert all(" (job qwen-c1/" in r["source"] and ", run 20261120T" in r["source"] for r in capacity), capacity
    with open(tmp_path / "reports/loop/candidates.csv") as fh:
        candidates = list(csv.DictReader(fh))
    three = [c for c in candidates if c["slice"] == "3g.40gb"]
    assert three and all(JOB_3G in c["provenance_source"] for c in three)
    # the report still finds the profile files behind the job-named sources (its latency curves)
    assert sum(r["role"] == "benchmark profile (latency curves)" for r in rows) == 3
