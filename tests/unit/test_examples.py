"""The committed examples (profiles/example/, reports/example/) are what the tools write today: a benchmark profile
that validates against the schema and was measured, and a cost report for the bundled workload. Regenerate both with
scripts/refresh_examples.sh when a schema or the planner changes."""

from __future__ import annotations

from pathlib import Path

from vlmopt.report.inputs import load_profiles_dir
from vlmopt.schemas.common import load_model
from vlmopt.schemas.profile import BenchmarkProfile

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_example_profile_is_a_complete_measured_profile() -> None:
    folder = REPO_ROOT / "profiles" / "example"
    paths = sorted(folder.rglob("*@*.json"))
    assert paths, "profiles/example/ holds no profile (scripts/refresh_examples.sh profile)"
    assert load_profiles_dir(folder)  # what `vlmopt report --profiles` reads
    for path in paths:
        profile = load_model(BenchmarkProfile, path)
        assert profile.complete and profile.provenance is not None and profile.provenance.kind == "measured"
        assert profile.engine.name == "vllm" and profile.engine.server_args is not None
        assert len(profile.points) >= 2
        for point in profile.points:
            assert point.completed > 0 and point.failed == 0 and point.request_throughput > 0
        assert path.with_suffix(".csv").is_file()


def test_example_report_is_the_bundled_workloads_report() -> None:
    folder = REPO_ROOT / "reports" / "example"
    for name in ("report.md", "report.html"):
        assert (folder / name).is_file(), f"reports/example/{name} missing (scripts/refresh_examples.sh report)"
    markdown = (folder / "report.md").read_text()
    assert "vlmopt/data/prices.yaml" in markdown  # every dollar figure names its catalog row
    assert "estimated" in markdown  # no measured profile: the capacities say they are estimates
