"""The cost report: figures agree with plan.json, CSVs are complete, HTML is self-contained, gaps are stated."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.unit.report_fixtures import (
    PROFILE_PATH,
    SECRET,
    make_manifest,
    make_plan,
    make_profile,
    make_profiles,
)
from vlmopt.cli import app
from vlmopt.report import ReportFolderError, build_report
from vlmopt.report.formatting import is_number, number, usd
from vlmopt.report.inputs import discover_profiles
from vlmopt.report.tables import (
    candidates_frame,
    pareto_optimal,
    points_frame,
    profile_provenance,
    quality_frame,
    waterfall_frame,
)
from vlmopt.report.writer import write_folder_atomically
from vlmopt.schemas import Baseline, CostSummary, Fidelity, Lever, LoadPoint, Provenance, RejectedVariant, save_model

pytestmark = pytest.mark.unit

GENERATED = "2026-11-27T00:00:00+00:00"
HEADLINE_HOUR = re.compile(r"^- \*\*\$ per hour:\*\* \$([0-9,]+\.?[0-9]*)", re.MULTILINE)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    plan = make_plan()
    paths = build_report(plan, tmp_path_factory.mktemp("r") / "doc-qa", make_profiles(), [make_manifest()],
                         generated=GENERATED)
    return plan, paths


@pytest.fixture(scope="module")
def bare_report(tmp_path_factory):
    plan = make_plan(baseline=False, levers=False, candidates=False, memory=False)
    plan.services[0].fidelity = None
    paths = build_report(plan, tmp_path_factory.mktemp("r") / "bare", generated=GENERATED)
    return plan, paths


def test_markdown_total_equals_plan_cost(full_report):
    plan, paths = full_report
    text = paths.markdown.read_text()
    match = HEADLINE_HOUR.search(text)
    assert match, "headline $ per hour line missing from report.md"
    assert float(match.group(1).replace(",", "")) == pytest.approx(plan.cost.usd_per_hour, abs=0.005)
    assert f"This costs {usd(plan.cost.usd_per_hour)} per hour" in text


def test_sub_dollar_total_keeps_significant_digits(tmp_path):
    # A CPU demo plan costs cents per hour; two decimals would print $0.01 and hide the figure.
    plan = make_plan(candidates=False, memory=False)  # fewer plots to draw; only the totals matter here
    plan.cost = plan.cost.model_copy(update={"usd_per_hour": 0.012345})
    paths = build_report(plan, tmp_path / "r", generated=GENERATED)
    text = paths.markdown.read_text()
    assert float(HEADLINE_HOUR.search(text).group(1)) == pytest.approx(0.012345, rel=1e-3)
    # The node groups no longer add up to the total: the report must say so, not hide it.
    assert "the report shows the plan's total" in text


@pytest.mark.parametrize(
    ("value", "text"),
    [(11.48, "$11.48"), (8380.4, "$8,380.40"), (0.0123456, "$0.01235"), (0, "$0.00"), (-2.5, "−$2.50"),
     (None, "n/a"), (float("nan"), "n/a"), (np.float64(0.83043), "$0.8304")],
)
def test_usd_formatting(value, text):
    assert usd(value) == text


def test_numpy_scalars_from_pandas_count_as_numbers():
    assert number(np.int64(40)) == "40" and number(np.float64(1342.2)) == "1,342"
    assert not is_number(np.float64("nan")) and not is_number(True) and not is_number(None)


def test_html_carries_exact_total_for_machines(full_report):
    plan, paths = full_report
    html = paths.html.read_text()
    value = re.search(r'id="figure-usd_per_hour" data-value="([^"]+)"', html).group(1)
    assert float(value) == plan.cost.usd_per_hour


def test_csvs_parse_with_one_row_per_candidate(full_report):
    plan, paths = full_report
    for name in ("candidates.csv", "costs.csv", "points.csv", "quality.csv"):
        assert name in paths.csv and paths.csv[name].is_file()
    candidates = pd.read_csv(paths.csv["candidates.csv"])
    assert len(candidates) == len(plan.candidates) == 18
    chosen = candidates[candidates["chosen"]]
    assert set(zip(chosen["variant"], chosen["slice"], chosen["market"], strict=True)) == {
        ("awq", "3g.40gb", "on_demand"), ("awq", "3g.40gb", "spot")}
    assert (candidates["slo"] == "fail").sum() == sum(not (c.fits and c.meets_slo) for c in plan.candidates)

    costs = pd.read_csv(paths.csv["costs.csv"]).set_index("metric")
    assert costs.loc["usd_per_hour", "plan"] == pytest.approx(plan.cost.usd_per_hour)
    assert costs.loc["usd_per_hour", "baseline"] == pytest.approx(plan.baseline.cost.usd_per_hour)
    assert costs.loc["usd_per_month", "saving"] == pytest.approx(
        plan.baseline.cost.usd_per_month - plan.cost.usd_per_month)

    points = pd.read_csv(paths.csv["points.csv"])
    assert len(points) == sum(len(p.points) for p in make_profiles())
    assert points["ttft_p95_ms"].notna().all() and points["e2el_p50_ms"].notna().all()

    quality = pd.read_csv(paths.csv["quality.csv"]).set_index("variant")
    assert list(quality.index) == ["bf16", "fp8", "gptq", "awq"]
    assert quality.loc["awq", "mean_kl"] == pytest.approx(4.1e-4)
    assert quality.loc["fp8", "top1_agreement"] == pytest.approx(0.925)


def test_html_is_self_contained_and_embeds_every_plot(full_report):
    _, paths = full_report
    html = paths.html.read_text()
    # Catalog sources may print a URL as text; nothing may be *loaded* from one.
    assert not re.search(r"""(src|href|action|srcset)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//|@import", html, re.IGNORECASE)
    assert "default-src 'none'" in html  # the browser itself refuses any fetch
    assert set(paths.plots) == {"cost_waterfall", "pareto", "latency_curves", "memory", "quality"}
    embedded = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(paths.plots)
    embedded_bytes = {base64.b64decode(b) for b in embedded}
    for name, png in paths.plots.items():
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG"), name
        assert data in embedded_bytes, f"plot {name} is not embedded in report.html"
    # report.md references the same files.
    md = paths.markdown.read_text()
    for name in paths.plots:
        assert f"(plots/{name}.png)" in md


def test_every_plot_and_table_states_its_source(full_report):
    _, paths = full_report
    html = paths.html.read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert len(captions) == 5
    for caption in captions:
        assert "Source: " in caption and re.search(r"measured|estimated|catalog|plan\.json", caption), caption
    md = paths.markdown.read_text()
    assert md.count("**Not shown:**") == 0
    # Every table is followed by its source line.
    lines = [line for line in md.splitlines() if line.strip()]
    table_ends = [i for i, line in enumerate(lines[:-1]) if line.startswith("|") and not lines[i + 1].startswith("|")]
    assert len(table_ends) >= 8
    for i in table_ends:
        assert lines[i + 1].startswith("*Source: "), lines[i + 1]
    assert "2026-11-01" in md  # catalog retrieval date of the prices
    assert PROFILE_PATH in md  # the measured run behind the capacities


def test_recommendation_names_choice_cost_and_saving(full_report):
    plan, paths = full_report
    md = paths.markdown.read_text()
    paragraph = md.split("## Recommendation", 1)[1].strip().split("\n\n", 1)[0]
    assert "variant awq" in paragraph and "3g.40gb" in paragraph and "spot" in paragraph
    saving = 1 - plan.cost.usd_per_hour / plan.baseline.cost.usd_per_hour
    assert f"{saving * 100:.1f}% less than the baseline" in paragraph
    assert "quantization" in paragraph  # the largest lever


def test_secrets_in_server_env_never_reach_the_report(full_report):
    _, paths = full_report
    for path in paths.out_dir.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".html", ".csv"):
            assert SECRET not in path.read_text(), path


def test_missing_inputs_are_stated_not_drawn(bare_report):
    _, paths = bare_report
    md = paths.markdown.read_text()
    for phrase in ("no baseline", "no candidates", "No benchmark profiles were given",
                   "no memory breakdown", "No variant manifest was given", "attributes its saving to no lever"):
        assert phrase in md, phrase
    assert paths.plots == {}
    assert "<img" not in paths.html.read_text()
    # The CSVs still exist with their header, so a script reading them needs no special case.
    for name in ("candidates.csv", "points.csv", "quality.csv"):
        frame = pd.read_csv(paths.csv[name])
        assert frame.empty and len(frame.columns) > 3
    assert HEADLINE_HOUR.search(md)


def test_levers_that_do_not_add_up_show_an_unattributed_step(tmp_path):
    plan = make_plan(lever_gap=1.5, candidates=False, memory=False)
    frame = waterfall_frame(plan)
    residual = frame[frame["kind"] == "residual"]
    assert len(residual) == 1 and residual["delta"].iloc[0] == pytest.approx(-1.5)  # a saving no lever claims
    paths = build_report(plan, tmp_path / "r", generated=GENERATED)
    assert "'unattributed'" in paths.markdown.read_text()


@settings(max_examples=60, deadline=None)
@given(
    baseline=st.floats(min_value=0.01, max_value=1e4, allow_nan=False),
    savings=st.lists(st.tuples(st.sampled_from(["quantization", "mig_packing", "spot", "other"]),
                               st.floats(min_value=-100, max_value=1e3, allow_nan=False)), max_size=4),
    total=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
)
def test_waterfall_always_lands_on_the_plan_total(baseline, savings, total):
    plan = make_plan(candidates=False)
    plan.cost = CostSummary(usd_per_hour=total, usd_per_month=total * 730)
    plan.baseline = Baseline(cost=CostSummary(usd_per_hour=baseline, usd_per_month=baseline * 730))
    plan.levers = [Lever(name=name, usd_per_hour_saved=s, explanation="x") for name, s in savings]
    frame = waterfall_frame(plan)
    steps = frame[frame["kind"] != "total"]
    assert frame["end"].iloc[0] == baseline and frame["end"].iloc[-1] == total
    # Each step starts where the previous one ended, and the last step ends on the plan's total.
    level = baseline
    for row in steps.itertuples():
        assert row.start == pytest.approx(level)
        level = row.end
    assert level == pytest.approx(total, abs=1e-5)


def test_pareto_marks_only_undominated_passing_candidates():
    plan = make_plan()
    frame = candidates_frame(plan)
    flagged = frame[frame["pareto_optimal"]]
    passing = frame[(frame["slo"] == "pass")]
    for row in flagged.itertuples():
        better = passing[(passing["usd_per_million_output_tokens"] <= row.usd_per_million_output_tokens)
                         & (passing["p95_latency_ms"] <= row.p95_latency_ms)]
        assert len(better) == 1  # only itself
    # A dominated one is not flagged; a failing one never is, however cheap.
    assert not frame[frame["slo"] == "fail"]["pareto_optimal"].any()
    tiny = pd.DataFrame({"slo": ["pass", "pass", "pass", "fail"],
                         "usd_per_million_output_tokens": [1.0, 2.0, 0.5, 0.1],
                         "p95_latency_ms": [100.0, 50.0, 300.0, 10.0]})
    assert list(pareto_optimal(tiny)) == [True, True, True, False]
    tiny.loc[1, "p95_latency_ms"] = 150.0  # now worse than row 0 on both axes
    assert list(pareto_optimal(tiny)) == [True, False, True, False]


def test_rebuild_replaces_previous_report_completely(tmp_path):
    out = tmp_path / "doc-qa"
    light = make_plan(baseline=False, candidates=False, memory=False)
    build_report(light, out, [make_profile()], generated=GENERATED)
    assert (out / "plots" / "latency_curves.png").is_file()
    paths = build_report(light, out, generated=GENERATED)  # no profiles this time
    assert "latency_curves" not in paths.plots
    assert not (out / "plots" / "latency_curves.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ReportFolderError, match="not a report folder"):
        build_report(make_plan(), out, generated=GENERATED)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_failed_write_keeps_the_old_report(tmp_path):
    out = tmp_path / "r"
    write_folder_atomically(out, {"report.md": "old"})
    with pytest.raises(TypeError):
        write_folder_atomically(out, {"report.md": "new", "broken.csv": 42})  # type: ignore[dict-item]
    assert (out / "report.md").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_points_read_the_latency_keys_the_benchmark_writes():
    """Contract with vlmopt.bench: the report finds p50 (vLLM's `median_*`) and p95 under the keys it writes."""
    from vlmopt.bench.metrics import DEFAULT_PERCENTILES, latency_stats

    values_s = [0.1, 0.2, 0.3, 0.4, 1.0]
    fields = {**latency_stats("ttft", values_s, DEFAULT_PERCENTILES),
              **latency_stats("e2el", [v * 10 for v in values_s], DEFAULT_PERCENTILES)}
    profile = make_profile()
    profile.points = [LoadPoint(label="c4", request_throughput=3.0, **fields)]
    row = points_frame([profile]).iloc[0]
    assert row["ttft_p50_ms"] == pytest.approx(300.0)
    assert row["ttft_p95_ms"] == pytest.approx(np.percentile(values_s, 95) * 1000)
    assert row["e2el_p50_ms"] == pytest.approx(3000.0)


def test_quality_lists_rejected_variants_and_uses_variant_provenance():
    manifest = make_manifest()
    manifest.variants[1].provenance = Provenance(kind="measured", source="vlmopt quantize on ci-runner",
                                                 date="2026-11-19")
    manifest.rejected = [RejectedVariant(name="int8", method="int8", reason="KL 0.05 above --max-kl 0.01",
                                         fidelity=Fidelity(mean_kl=0.05, top1_agreement=0.6, prompts=40,
                                                           measured_how="in-process before save"))]
    frame = quality_frame([manifest], make_plan()).set_index("variant")
    assert frame.loc["int8", "role"] == "rejected: KL 0.05 above --max-kl 0.01"
    assert frame.loc["int8", "mean_kl"] == pytest.approx(0.05)
    assert frame.loc["fp8", "source"] == "measured (vlmopt quantize on ci-runner, 2026-11-19)"
    # awq is covered by the manifest, so the plan's copy of its fidelity adds no second row.
    assert list(frame.index).count("awq") == 1


def test_profile_provenance_prefers_the_benchmarks_own_record():
    profile = make_profile()
    assert profile_provenance(profile).source == "awq@h100-sxm-80gb-mig-3g_40gb run run-awq-1"
    profile.provenance = Provenance(kind="measured", source="vlmopt benchmark run r1 (awq@x.json)", date="2026-11-20")
    profile.complete = False
    profile.incomplete_reason = "server died at c16"
    prov = profile_provenance(profile)
    assert prov.source == "vlmopt benchmark run r1 (awq@x.json)" and prov.detail == "incomplete: server died at c16"


def test_discovers_profiles_named_inside_a_provenance_sentence(tmp_path):
    save_model(make_profile(), tmp_path / "profiles" / "awq@x.json")
    plan = make_plan(candidates=False)
    plan.inputs = [Provenance(kind="measured", source="vlmopt benchmark run r1 (profiles/awq@x.json)"),
                   Provenance(kind="measured", source="profiles/missing.json"),
                   Provenance(kind="catalog", source="profiles/awq@x.json")]  # not measured: not a profile
    found = discover_profiles(plan, [tmp_path])
    assert [p.variant for p in found.profiles] == ["awq"]


# ---- CLI -------------------------------------------------------------------------------------------------------

runner = CliRunner()


def _plan_dir(tmp_path: Path) -> Path:
    plan_dir = tmp_path / "deploy" / "doc-qa"
    save_model(make_plan(candidates=False, memory=False), plan_dir / "plan.json")
    return plan_dir


def test_cli_builds_report_from_plan_profiles_and_manifest(tmp_path):
    plan_dir = _plan_dir(tmp_path)
    profiles = tmp_path / "profiles"
    for p in make_profiles():
        save_model(p, profiles / "qwen" / f"{p.variant}@{p.device.slug()}.json")
    manifest = tmp_path / "manifest.json"
    save_model(make_manifest(), manifest)
    out = tmp_path / "reports" / "doc-qa"
    result = runner.invoke(app, ["report", str(plan_dir), "--profiles", str(profiles), "--manifest", str(manifest),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output and "profiles: 2, manifests: 1" in result.output
    assert len(pd.read_csv(out / "points.csv")) == 10
    assert len(pd.read_csv(out / "quality.csv")) == 4


def test_cli_default_out_and_profiles_named_by_the_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _plan_dir(tmp_path)
    # plan.inputs names PROFILE_PATH as a measured input; the CLI finds it relative to the current folder.
    save_model(make_profile("awq", 1.0, "run-awq-1"), tmp_path / PROFILE_PATH)
    result = runner.invoke(app, ["report", "deploy/doc-qa"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "reports" / "doc-qa" / "points.csv")) == 5


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such plan folder"),
        (lambda d: d.mkdir(parents=True), "plan.json: file not found"),
        (lambda d: (d.mkdir(parents=True), (d / "plan.json").write_text("{not json")), "not valid JSON"),
        (lambda d: (d.mkdir(parents=True), (d / "plan.json").write_text(json.dumps({"name": "x"}))), "invalid"),
    ],
    ids=["missing-folder", "missing-plan-json", "invalid-json", "invalid-plan"],
)
def test_cli_bad_plan_is_one_line_exit_2_and_writes_nothing(tmp_path, setup, message):
    plan_dir = tmp_path / "deploy" / "x"
    setup(plan_dir)
    out = tmp_path / "reports" / "x"
    result = runner.invoke(app, ["report", str(plan_dir), "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_invalid_profile_names_the_file(tmp_path):
    plan_dir = _plan_dir(tmp_path)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.json").write_text(json.dumps({"variant": "awq"}))
    out = tmp_path / "reports" / "x"
    result = runner.invoke(app, ["report", str(plan_dir), "--profiles", str(profiles), "--out", str(out)])
    assert result.exit_code == 2
    assert "broken.json" in result.output and "invalid" in result.output
    assert not out.exists()


def test_cli_refuses_non_report_out_folder(tmp_path):
    plan_dir = _plan_dir(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "data.txt").write_text("x")
    result = runner.invoke(app, ["report", str(plan_dir), "--out", str(out)])
    assert result.exit_code == 2 and "not a report folder" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["data.txt"]


def test_recommendation_says_how_close_to_optimal_the_plan_is():
    from vlmopt.report.recommendation import recommendation_text

    plan = make_plan(candidates=False, memory=False)
    proven = plan.model_copy(update={"solver": {"status": "optimal", "proven_gap": 0.0}})
    assert "The optimizer's plan is proven optimal." in recommendation_text(proven)
    limited = plan.model_copy(update={"solver": {"status": "time_limit", "proven_gap": 0.012345}})
    assert "is within 1.23% of optimal" in recommendation_text(limited)
    assert "optimal" not in recommendation_text(plan.model_copy(update={"solver": {}}))
