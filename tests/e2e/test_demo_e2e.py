"""`vlmopt demo` end to end on the real vLLM server (small settings): every step runs, and the deploy bundle,
plan.json and cost report it writes exist and agree with each other."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlmopt.bench.support import unservable_reason
from vlmopt.demo.common import DemoOptions
from vlmopt.schemas import BenchmarkProfile, Plan, VariantManifest, load_model


def _vlmopt() -> str:
    return str(Path(sys.executable).parent / "vlmopt")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, serve_python: Path) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, VLMOPT_SERVE_PYTHON=str(serve_python), COLUMNS="160")
    result = subprocess.run(
        [_vlmopt(), "demo", "--out", str(out), "--methods", "fp8,gptq", "--num-prompts", "6", "--concurrency", "1,2",
         "--output-tokens", "8"],
        capture_output=True, text=True, env=env, timeout=1500, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, result.stdout


def test_every_step_ran_and_the_report_path_is_printed(demo_run: tuple[Path, str]) -> None:
    out, stdout = demo_run
    summary = json.loads((out / "demo-summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["tiny model", "quantize", "benchmark", "local plan", "cloud plan"]
    assert all(s["status"] == "done" for s in summary["steps"]), summary["steps"]
    match = re.search(r"Open the cost report: (\S+)", stdout)
    assert match and Path(match.group(1)).is_file(), stdout[-2000:]
    assert Path(match.group(1)) == Path(summary["cloud_report"])


def test_variants_were_quantized_and_benchmarked(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "demo-summary.json").read_text())
    manifest = load_model(VariantManifest, summary["manifest"])
    assert {v.name for v in manifest.variants} == {"bf16", "fp8", "gptq"}
    measured = {load_model(BenchmarkProfile, p).variant: load_model(BenchmarkProfile, p) for p in summary["profiles"]}
    records = [load_model(BenchmarkProfile, p) for p in summary["unservable_records"]]
    if unservable_reason("W4A16"):  # this CPU has no AVX-512: gptq is recorded, not measured
        assert set(measured) == {"bf16", "fp8"}
        assert [(r.variant, r.unservable) for r in records] == [("gptq", unservable_reason("W4A16"))]
        assert not records[0].points
    else:
        assert set(measured) == {"bf16", "fp8", "gptq"} and not records
    for profile in measured.values():
        assert profile.complete and [p.label for p in profile.points] == ["c1", "c2"]
        assert all(p.completed == 6 and p.failed == 0 for p in profile.points)


def _plan_and_report_agree(plan_path: Path, report_html: Path) -> Plan:
    plan = load_model(Plan, plan_path)
    report_dir = report_html.parent
    with open(report_dir / "costs.csv", newline="") as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle)}
    assert float(rows["usd_per_hour"]["plan"]) == pytest.approx(plan.cost.usd_per_hour, rel=1e-9)
    html = report_html.read_text()
    shown = re.search(r'id="figure-usd_per_hour" data-value="([0-9.eE+-]+)"', html)
    assert shown and float(shown.group(1)) == pytest.approx(plan.cost.usd_per_hour, rel=1e-9)
    markdown = (report_dir / "report.md").read_text()
    assert plan.name in markdown
    return plan


def test_cloud_plan_bundle_and_report_agree(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "demo-summary.json").read_text())
    plan_path = Path(summary["cloud_plan"])
    plan = _plan_and_report_agree(plan_path, Path(summary["cloud_report"]))
    bundle = plan_path.parent
    for folder in ("clusters", "mig-parted", "nginx", "prometheus", "grafana", "skypilot", "triton", "vllm", "weights"):
        assert any((bundle / folder).rglob("*")), f"bundle has no {folder} files"
    # Every node group's replicas carry estimated capacities (no profile of the real model was measured here).
    kinds = {r.capacity_provenance.kind for g in plan.node_groups for r in g.gpu_layout.replicas}
    assert kinds == {"estimated"}
    assert plan.baseline is not None and plan.cost.usd_per_hour <= plan.baseline.cost.usd_per_hour


def test_local_plan_uses_the_measured_profiles(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "demo-summary.json").read_text())
    plan = _plan_and_report_agree(Path(summary["local_plan"]), Path(summary["local_report"]))
    replicas = [r for g in plan.node_groups for r in g.gpu_layout.replicas]
    assert replicas
    for replica in replicas:
        assert replica.capacity_provenance.kind == "measured"
        assert replica.capacity_provenance.source in summary["profiles"]
    # A variant the benchmark could not serve here is infeasible in the local plan, with the benchmark's reason.
    reason = unservable_reason("W4A16")
    if reason:
        assert plan.services[0].variant != "gptq"
        gptq = [c for c in plan.candidates if c.variant == "gptq"]
        manifest = load_model(VariantManifest, summary["manifest"])
        top1 = next(v.fidelity.top1_agreement for v in manifest.variants if v.name == "gptq" and v.fidelity)
        if top1 >= DemoOptions().local_min_top1_agreement:  # else the quality floor kept it out before this
            assert gptq and all(not c.meets_slo and reason in c.reason for c in gptq)
        else:
            assert not gptq and "gptq" in plan.services[0].why
