"""`vlmopt benchmark campaign` / `collect` in-process: the expected cost is printed before anything is written,
the folder is complete, `--from-plan` picks the options whose estimate decides the plan, bad input exits 2 with
one line and writes nothing, and the plain `vlmopt benchmark MANIFEST` still runs the benchmark command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.campaign_fixtures import BUCKETS, write_manifest
from vlmopt.campaign.targets import plan_targets
from vlmopt.cli import app
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.schemas import Candidate, GpuAssignment, NodeGroup, Plan, Provenance, Replica, ServerArgs, load_model
from vlmopt.schemas.campaign import CampaignManifest
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import ContractError
from vlmopt.schemas.plan import CostSummary

runner = CliRunner()
BENCH = ["--", "--concurrency", "1,4", "--num-prompts", "32", "--slo", "ttft_p95_ms=800,tpot_p95_ms=60"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "deploy.yaml").write_text(json.dumps({"storage": {"bucket": BUCKETS}}))
    return tmp_path


def _campaign(*args: str) -> list[str]:
    return ["benchmark", "campaign", "variants/qwen2.5-vl-3b/manifest.json", "--name", "c1",
            "--deploy-settings", "deploy.yaml", *args]


def test_writes_the_folder_after_printing_what_it_will_cost(workdir: Path) -> None:
    result = runner.invoke(app, _campaign("--target", "l4-24gb,h100-sxm-80gb:1g.10gb", "--cloud", "aws",
                                          "--results", "s3://bench/results", *BENCH))
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("expected:") < text.index("wrote ")  # the cost comes first
    record = load_model(CampaignManifest, workdir / "campaigns/c1/campaign.json")
    assert len(record.jobs) == 6 and record.expected_gpu_hours == pytest.approx(
        sum(j.estimate.gpu_hours for j in record.jobs))
    assert f"{record.expected_gpu_hours:.3f} GPU-hours, ${record.expected_usd:,.2f}" in " ".join(text.split())
    for source in ("startup: estimated (assumed 10 min per job", "duration: estimated (upper bound",
                   "price: catalog (vlmopt/data/prices.yaml: aws us-east-1 g6.xlarge on_demand"):
        assert source in " ".join(text.split())
    mig = next(j for j in record.jobs if j.target.slice == "1g.10gb")
    assert mig.estimate.gpu_share == pytest.approx(1 / 7, abs=1e-3)  # a slice pays its share of the GPU
    assert record.benchmark_args == BENCH[1:]
    folder = workdir / "campaigns/c1"
    for path in ("README.md", "inputs/manifest.json", "inputs/vlmopt-job.sh", "weights/upload.sh",
                 "clusters/aws-us-east-1/node-pools/eksctl-nodegroups.yaml",
                 "clusters/aws-us-east-1/kubernetes/00-campaign.yaml", mig.file):
        assert (folder / path).is_file(), path
    assert "not submitted" in text


def _refused(workdir: Path, args: list[str], *needles: str, env: dict[str, str] | None = None) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in result.output
    assert not (workdir / "campaigns").exists()


def test_unknown_gpu_and_slice_are_refused(workdir: Path) -> None:
    _refused(workdir, _campaign("--target", "h900", "--results", "s3://b/r", *BENCH),
             "--target 'h900': unknown GPU; the GPU catalog has")
    _refused(workdir, _campaign("--target", "l4-24gb:1g.5gb", "--results", "s3://b/r", *BENCH),
             "l4-24gb does not support MIG")
    _refused(workdir, _campaign("--target", "h100-sxm-80gb:5g.20gb", "--results", "s3://b/r", *BENCH),
             "h100-sxm-80gb has no MIG profile '5g.20gb'")


def test_missing_manifest_and_results_are_refused(workdir: Path) -> None:
    _refused(workdir, ["benchmark", "campaign", "nowhere/manifest.json", "--target", "l4-24gb", "--results",
                       "s3://b/r"], "nowhere/manifest.json: variant manifest not found")
    _refused(workdir, _campaign("--target", "l4-24gb", *BENCH), "--results: where the jobs leave")
    _refused(workdir, _campaign("--target", "l4-24gb", "--results", "ftp://b", *BENCH), "give pvc:CLAIM")
    _refused(workdir, _campaign("--target", "l4-24gb", "--results", "pvc:r", "--engine", "skypilot", *BENCH),
             "SkyPilot jobs need a bucket")


def test_benchmark_options_are_checked_by_the_benchmark_parser(workdir: Path) -> None:
    base = _campaign("--target", "l4-24gb", "--results", "s3://b/r")
    _refused(workdir, [*base, "--", "--concurrency", "abc"], "--concurrency: 'abc' is not a comma-separated")
    _refused(workdir, [*base, "--", "--no-such-option"], "benchmark options: No such option: --no-such-option")
    _refused(workdir, [*base, "--", "--slo", "latency=5"], "SLO key 'latency' is not")
    _refused(workdir, [*base, "--", "--out", "x"], "benchmark option --out: set by the campaign")
    _refused(workdir, [*base, "--", "--concurrency", "1", "--rate", "2"], "--concurrency and --rate are exclusive")


def test_mig_slices_need_kubernetes(workdir: Path) -> None:
    _refused(workdir, _campaign("--target", "h100-sxm-80gb:3g.40gb", "--engine", "skypilot", "--results",
                                "s3://b/r", *BENCH), "SkyPilot rents whole GPUs")


def test_submit_without_credentials_writes_nothing(workdir: Path) -> None:
    env = {"KUBECONFIG": str(workdir / "no-kubeconfig"), "HOME": str(workdir)}
    _refused(workdir, _campaign("--target", "l4-24gb", "--cloud", "aws", "--results", "s3://b/r", "--submit",
                                *BENCH), "no Kubernetes credentials", env=env)
    env["VLMOPT_SKY_PYTHON"] = str(workdir / "no-python")
    env["PATH"] = "/usr/bin:/bin"
    _refused(workdir, _campaign("--target", "l4-24gb", "--engine", "skypilot", "--results", "s3://b/r", "--submit",
                                *BENCH), "SkyPilot", env=env)


def test_resume_without_submit_says_what_it_would_run(workdir: Path) -> None:
    assert runner.invoke(app, _campaign("--target", "l4-24gb", "--cloud", "aws", "--results", "s3://b/r",
                                        *BENCH)).exit_code == 0
    result = runner.invoke(app, ["benchmark", "campaign", "--resume", "campaigns/c1"])
    assert result.exit_code == 0, result.output
    assert "would submit 3 job(s): c1-bf16-l4-24gb, c1-fp8-l4-24gb, c1-awq-l4-24gb (add --submit)" in " ".join(
        result.output.split())


def test_plain_benchmark_command_still_runs_the_benchmark(workdir: Path) -> None:
    result = runner.invoke(app, ["benchmark", "no-such-manifest.json", "--concurrency", "1"])
    assert result.exit_code == 2 and "no-such-manifest.json: not found" in result.output
    help_text = " ".join(runner.invoke(app, ["benchmark", "--help"]).output.split())
    assert "--concurrency" in help_text and "vlmopt benchmark campaign MANIFEST" in help_text


def test_collect_reports_missing_jobs_and_exits_1(workdir: Path) -> None:
    assert runner.invoke(app, _campaign("--target", "l4-24gb", "--cloud", "aws", "--results", "s3://b/r",
                                        *BENCH)).exit_code == 0
    (workdir / "copy").mkdir()
    result = runner.invoke(app, ["benchmark", "collect", "campaigns/c1", "--from", "copy"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert result.output.count("never submitted") == 3
    assert "vlmopt benchmark campaign --resume campaigns/c1 --submit" in " ".join(result.output.split())


# -- --from-plan: which options decide the plan ---------------------------------------------------------------------

EST = Provenance(kind="estimated", source="vlmopt roofline")
MEAS = Provenance(kind="measured", source="profiles/x.json")


def _plan(chosen_kind: Provenance) -> Plan:
    args = ServerArgs(model="variants/qwen2.5-vl-3b/fp8", max_num_seqs=64, max_num_batched_tokens=8192)
    replica = Replica(service="docs", variant="fp8", slice="whole", server_args=args, capacity_rps=2.0,
                      capacity_provenance=chosen_kind)
    group = NodeGroup(name="l4", gpu="l4-24gb", cloud="aws", region="us-east-1", instance_type="g6.xlarge",
                      market="on_demand", instances=2, gpu_layout=GpuAssignment(replicas=[replica]),
                      usd_per_hour=1.6, price_provenance=MEAS)

    def cand(variant, gpu, slice_name, usd, rps, prov=EST, ok=True):
        return Candidate(service="docs", variant=variant, gpu=gpu, slice=slice_name, market="on_demand", fits=ok,
                         meets_slo=ok, capacity_rps=rps, usd_per_hour_per_replica=usd, provenance=prov)

    candidates = [
        cand("fp8", "l4-24gb", "whole", 0.80, 2.0, prov=chosen_kind),  # the choice: 0.40 $/h per req/s
        cand("awq", "l4-24gb", "whole", 0.80, 1.9),                    # 0.42: within 10 %
        cand("fp8", "h100-sxm-80gb", "1g.10gb", 0.98, 2.2),            # 0.45: within 15 %, not 10 %
        cand("bf16", "h100-sxm-80gb", "whole", 6.88, 9.0),             # 0.76: far
        cand("awq", "a100-40gb", "whole", 2.0, 5.5, prov=MEAS),        # 0.36 but already measured
        cand("fp8", "a100-40gb", "2g.10gb", 0.3, 1.0, ok=False),       # does not meet the SLO
    ]
    return Plan(name="p", mode="cloud", created="", workload="w", services=[], node_groups=[group],
                cost=CostSummary(usd_per_hour=1.6, usd_per_month=1168), candidates=candidates)


def _targets(tmp_path: Path, plan: Plan, within: float):
    from vlmopt.schemas.manifest import VariantManifest

    manifest = load_model(VariantManifest, write_manifest(tmp_path))
    prices = load_model(PriceCatalog, data_file("prices.yaml"))
    return plan_targets(plan, "plan.json", within, ["bf16", "fp8", "awq"], manifest, load_gpu_catalog(), prices,
                        "on_demand", None, None, "kubernetes")


def test_from_plan_picks_estimated_choices_and_close_runners_up(tmp_path: Path) -> None:
    picked, _ = _targets(tmp_path, _plan(EST), 10)
    assert [(p.variant, p.target.gpu, p.target.slice) for p in picked] == [
        ("fp8", "l4-24gb", "whole"), ("awq", "l4-24gb", "whole")]
    assert picked[0].target.why.startswith("plan: chosen for docs, capacity estimated")
    assert picked[1].target.why == "plan: runner-up for docs, +5% $/req/s vs the choice, estimated"
    # the plan's node group says where: same cloud, region and instance type
    assert (picked[0].target.cloud, picked[0].target.region, picked[0].target.instance_type) == (
        "aws", "us-east-1", "g6.xlarge")
    wider, _ = _targets(tmp_path, _plan(EST), 15)
    assert ("fp8", "h100-sxm-80gb", "1g.10gb") in [(p.variant, p.target.gpu, p.target.slice) for p in wider]


def test_from_plan_with_every_decision_measured_has_nothing_to_run(tmp_path: Path) -> None:
    plan = _plan(MEAS)
    plan.candidates = [c for c in plan.candidates if c.provenance.kind == "measured" or not c.fits]
    with pytest.raises(ContractError, match="no candidate to benchmark"):
        _targets(tmp_path, plan, 10)


def test_from_plan_cli_refuses_a_plan_without_candidates(workdir: Path) -> None:
    plan = _plan(MEAS)
    plan.candidates = []
    (workdir / "plan.json").write_text(plan.model_dump_json())
    _refused(workdir, _campaign("--from-plan", "plan.json", "--results", "s3://b/r", *BENCH),
             "--from-plan plan.json: no candidate to benchmark")


def test_collect_without_the_cloud_cli_says_how_to_get_the_results(workdir: Path) -> None:
    assert runner.invoke(app, _campaign("--target", "l4-24gb", "--cloud", "aws", "--results", "s3://b/r",
                                        *BENCH)).exit_code == 0
    result = runner.invoke(app, ["benchmark", "collect", "campaigns/c1"], env={"PATH": str(workdir / "no-bin")})
    assert result.exit_code == 2, result.output
    assert "aws not found: install the cloud CLI, or copy s3://b/r/c1 yourself and pass --from DIR" in " ".join(
        result.output.split())
