"""Bundled data inside the package, and the user's data folder (--data-dir / $VLMOPT_DATA_DIR) over it file by file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vlmopt import paths
from vlmopt.cli import app
from vlmopt.hw.models import list_bundled_models, load_model_arch
from vlmopt.schemas.common import ContractError, load_model
from vlmopt.schemas.plan import Plan

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    paths.set_data_dir(None)
    yield
    paths.set_data_dir(None)


def test_bundled_data_lives_in_the_package() -> None:
    root = paths.bundled_data_dir()
    assert root == Path(paths.__file__).resolve().parent / "data"
    for name in ("gpus.yaml", "prices.yaml", "workloads/default.yaml"):
        assert paths.data_file(name) == root / name and (root / name).is_file()
    assert "qwen2.5-vl-7b" in paths.data_files("models")
    assert paths.data_label(root / "prices.yaml") == "vlmopt/data/prices.yaml"
    assert paths.data_label("/somewhere/prices.yaml") == "/somewhere/prices.yaml"


def _user_folder(tmp_path: Path) -> Path:
    user = tmp_path / "data"
    (user / "models").mkdir(parents=True)
    (user / "prices.yaml").write_text("prices: []\n")
    spec = yaml.safe_load(paths.data_file("models/qwen2.5-vl-7b.yaml").read_text())
    spec["name"] = "my-vlm"
    (user / "models" / "my-vlm.yaml").write_text(yaml.safe_dump(spec))
    return user


def test_user_folder_overrides_file_by_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _user_folder(tmp_path)
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(user))
    assert paths.data_file("prices.yaml") == user / "prices.yaml"
    assert paths.data_file("gpus.yaml") == paths.bundled_data_dir() / "gpus.yaml"  # not in the folder: bundled
    models = paths.data_files("models")
    assert models["my-vlm"] == user / "models" / "my-vlm.yaml" and "qwen2.5-vl-7b" in models
    assert "my-vlm" in list_bundled_models()
    assert load_model_arch("my-vlm").hidden_size == load_model_arch("qwen2.5-vl-7b").hidden_size


def test_option_wins_over_environment_and_bad_folders_are_named(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    user = _user_folder(tmp_path)
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ContractError, match=r"\$VLMOPT_DATA_DIR=.*missing: not a folder"):
        paths.data_file("prices.yaml")
    paths.set_data_dir(user)
    assert paths.data_file("prices.yaml") == user / "prices.yaml"
    with pytest.raises(ContractError, match=r"--data-dir .*nope: not a folder"):
        paths.set_data_dir(tmp_path / "nope")


def test_cli_data_dir_reaches_the_planner_and_holds_for_one_command(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "data"
    user.mkdir()
    bundled = yaml.safe_load(paths.data_file("prices.yaml").read_text())
    only = next(row["gpu"] for row in bundled["prices"] if row["gpu"].startswith("h100"))
    bundled["prices"] = [row for row in bundled["prices"] if row["gpu"] == only]
    (user / "prices.yaml").write_text(yaml.safe_dump(bundled))

    result = runner.invoke(app, ["plan", "--data-dir", str(user), "--out", "d", "--report-dir", "r"])
    assert result.exit_code == 0, result.output
    plan = load_model(Plan, tmp_path / "d" / "plan.json")
    assert {g.gpu for g in plan.node_groups} == {only}
    # plan.json names the user's catalog without the machine's absolute path (the bundle must be portable)
    sources = [p.source for p in plan.inputs]
    assert any(s.startswith("data/prices.yaml") for s in sources), sources
    assert not any(str(tmp_path) in s for s in sources)

    result = runner.invoke(app, ["gpus", "--json"])  # the next command starts without the previous --data-dir
    assert result.exit_code == 0, result.output
    assert paths.user_data_dir() is None


def test_cli_bad_data_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    for command in (["gpus"], ["plan", "--out", str(tmp_path / "d")]):
        result = runner.invoke(app, [*command, "--data-dir", str(tmp_path / "nope")])
        assert result.exit_code == 2, result.output
        assert "--data-dir" in result.output and "not a folder" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_bundled_workload_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert {"default", "multi-service"} <= set(paths.data_files("workloads"))
    result = runner.invoke(app, ["plan", "--workload", "multi-service", "--out", "d", "--report-dir", "r"])
    assert result.exit_code == 0, result.output
    plan = load_model(Plan, tmp_path / "d" / "plan.json")
    assert plan.workload == "bundled:multi-service" and len(plan.services) > 1


def test_model_data_files_follow_the_user_data_folder(tmp_path, monkeypatch) -> None:
    """The performance model's tables (bands, processor timings, published rows) come through data_file, so a user's
    folder overrides them as it does the catalogs."""
    from vlmopt.plan import bands, host, published

    (tmp_path / "perf_validation.yaml").write_text(
        "figures:\n- {kind: prior, ratio_p10: 0.5, ratio_p90: 2.0, capacity_mape: 0.3, cases: 3, how: mine, "
        "date: '2026-12-01'}\n")
    (tmp_path / "processor_costs.yaml").write_text(
        "cpu: my cpu\nmeasured: '2026-12-01'\nhow: by hand\ntransformers_version: '5'\nfamilies:\n"
        "- {family: llava, backend: torchvision, processor: P, sizes: [{width: 100, height: 100, cpu_s: 0.5}]}\n")
    monkeypatch.setenv("VLMOPT_DATA_DIR", str(tmp_path))
    figure = bands.load_validation_errors().get("prior")
    assert figure is not None and figure.how == "mine" and bands.load_validation_errors().get("calibrated") is None
    table = host.load_processor_costs()
    assert table is not None and table.cpu == "my cpu" and table.label == str(tmp_path / "processor_costs.yaml")
    costs = host.prior_host_costs("llava", (100, 100))
    assert costs.image_s == 0.5 and str(tmp_path) in costs.source
    assert len(published.load_published().rows) > 0  # not in the user's folder: the bundled file
    monkeypatch.delenv("VLMOPT_DATA_DIR")
    assert bands.load_validation_errors().get("prior").how != "mine"
