"""`vlmopt plan` end to end in-process: the no-argument default writes plan.json, a bundle and a report; bad input
exits 2 with one line naming the field and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vlmopt.cli import app
from vlmopt.paths import data_file
from vlmopt.schemas.common import load_model
from vlmopt.schemas.plan import Plan

pytestmark = pytest.mark.unit
runner = CliRunner()


def _default_workload() -> dict:
    return yaml.safe_load((data_file("workloads/default.yaml")).read_text())


def test_no_arguments_plans_the_bundled_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["plan"])
    assert result.exit_code == 0, result.output
    plan = load_model(Plan, tmp_path / "deploy" / "default" / "plan.json")
    assert plan.workload == "bundled:default" and plan.node_groups and plan.services[0].variant
    # every capacity is an estimate, and the output says so
    assert all(r.capacity_provenance.kind == "estimated" for g in plan.node_groups for r in g.gpu_layout.replicas)
    assert "estimated" in result.output
    assert (tmp_path / "deploy" / "default" / "vllm" / "replicas.json").is_file()
    assert any((tmp_path / "reports" / "default").iterdir())


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _assert_refused(tmp_path: Path, args: list[str], *needles: str) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["plan", *args, "--out", str(out), "--report-dir", str(tmp_path / "rep")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "rep").exists()


def test_negative_price_is_refused(tmp_path: Path) -> None:
    prices = yaml.safe_load((data_file("prices.yaml")).read_text())
    prices["prices"][2]["usd_per_hour"] = -1.0
    _assert_refused(tmp_path, ["--prices", str(_write(tmp_path / "p.yaml", prices))], "prices.2.usd_per_hour")


def test_unknown_gpu_in_prices_is_refused(tmp_path: Path) -> None:
    prices = yaml.safe_load((data_file("prices.yaml")).read_text())
    prices["prices"][0]["gpu"] = "z100-9000gb"
    _assert_refused(tmp_path, ["--prices", str(_write(tmp_path / "p.yaml", prices))], "prices[0].gpu",
                    "z100-9000gb")


def test_unknown_gpu_in_workload_is_refused(tmp_path: Path) -> None:
    wl = _default_workload()
    wl["constraints"]["gpus"] = ["z100-9000gb"]
    _assert_refused(tmp_path, ["--workload", str(_write(tmp_path / "w.yaml", wl))], "constraints.gpus")


def test_slo_below_reach_is_refused(tmp_path: Path) -> None:
    wl = _default_workload()
    wl["services"][0]["slo"] = {"ttft_p95_ms": 1}
    _assert_refused(tmp_path, ["--workload", str(_write(tmp_path / "w.yaml", wl))],
                    "services[0].slo.ttft_p95_ms", "below what any option reaches")


def test_malformed_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("name: x\nservices: [\n  - {name: a\n")
    _assert_refused(tmp_path, ["--workload", str(bad)], "not valid YAML")


def test_schema_violation_names_the_field(tmp_path: Path) -> None:
    wl = _default_workload()
    wl["services"][0]["peak_rps"] = -3
    _assert_refused(tmp_path, ["--workload", str(_write(tmp_path / "w.yaml", wl))], "services.0.peak_rps")


def test_bad_options_are_refused(tmp_path: Path) -> None:
    _assert_refused(tmp_path, ["--mode", "moon"], "--mode")
    _assert_refused(tmp_path, ["--availability", "1.5"], "--availability")
    _assert_refused(tmp_path, ["--mode", "fleet"], "--inventory")


def test_fleet_mode_packs_onto_the_inventory(tmp_path: Path) -> None:
    inventory = {"source": "test-fleet", "gpus": [
        {"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_total_gib": 79.6, "usd_per_hour": 2.0}
        for i in range(2)
    ]}
    inv = tmp_path / "fleet.json"
    inv.write_text(json.dumps(inventory))
    out = tmp_path / "out"
    result = runner.invoke(app, ["plan", "--mode", "fleet", "--inventory", str(inv), "--out", str(out),
                                 "--report-dir", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    plan = load_model(Plan, out / "plan.json")
    assert plan.mode == "fleet"
    assert all(g.gpu == "h100-sxm-80gb" and g.market == "on_demand" for g in plan.node_groups)
    assert sum(g.instances * g.gpus_per_instance for g in plan.node_groups) <= 2
    assert plan.cost.usd_per_hour == pytest.approx(2.0 * sum(g.instances for g in plan.node_groups))
