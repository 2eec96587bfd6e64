"""write_plan_outputs: the one writer of plan.json, the deploy bundle and the cost report, used by `vlmopt plan`,
`vlmopt demo` and `vlmopt report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.plan_outputs import PlanOutputError, write_plan_outputs
from vlmopt.report import ReportFolderError

from .plan_fixtures import mixed_plan
from .report_fixtures import make_manifest, make_plan, make_profiles

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def plan():
    return make_plan(candidates=False, memory=False)


def test_bundle_plan_json_and_report(tmp_path: Path) -> None:
    plan = mixed_plan()
    written = write_plan_outputs(plan, deploy_dir=tmp_path / "deploy", report_dir=tmp_path / "report",
                                 catalog=load_gpu_catalog(), profiles=make_profiles(), manifests=[make_manifest()])
    assert written.plan_json == tmp_path / "deploy" / "plan.json"
    assert json.loads(written.plan_json.read_text())["name"] == plan.name
    assert len(written.deploy_files) > 5 and all(p.is_file() for p in written.deploy_files)
    assert written.report is not None and written.report.html.is_file() and written.report.markdown.is_file()


def test_plan_json_alone_or_report_alone(tmp_path: Path, plan) -> None:
    bare = write_plan_outputs(plan, deploy_dir=tmp_path / "cpu", report_dir=None, bundle=False)
    assert bare.deploy_files == [tmp_path / "cpu" / "plan.json"] and bare.report is None
    assert sorted(p.name for p in (tmp_path / "cpu").iterdir()) == ["plan.json"]
    report_only = write_plan_outputs(plan, deploy_dir=None, report_dir=tmp_path / "again")
    assert report_only.plan_json is None and report_only.report is not None


def test_a_foreign_folder_is_named_and_left_alone(tmp_path: Path, plan) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(PlanOutputError) as err:
        write_plan_outputs(plan, deploy_dir=None, report_dir=foreign)
    assert err.value.target == "report" and isinstance(err.value.cause, ReportFolderError)
    assert str(foreign) in str(err.value)
    with pytest.raises(PlanOutputError) as err:
        write_plan_outputs(plan, deploy_dir=foreign, report_dir=None)
    assert err.value.target == "deploy"
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"
