"""`vlmopt quantize org/name` with the model in a pre-filled hub cache and HF_HUB_OFFLINE=1 (no network): the
variants are named after the repo, not the snapshot's commit folder, the manifest records the repo and commit, and
the vision tower still verifies byte-identical (the snapshot's files are symlinks into blobs/, as the hub writes
them). A bad VLMOPT_AWQ_GRID is bad input like any other: exit 2, one line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.hub_cache import fill_hub_cache
from vlmopt.cli import app

COMMIT = "c0ffee0000000000000000000000000000000001"


def test_quantize_a_hub_id_from_the_cache(tiny_model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llmcompressor", reason="quantizing needs the quantize extra (scripts/setup.sh main)")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hub_cache(tmp_path / "hf-cache", "vlmopt-test/Tiny-LLaVA", tiny_model_dir, COMMIT)
    out = tmp_path / "variants"
    result = CliRunner().invoke(app, ["quantize", "vlmopt-test/Tiny-LLaVA", "--method", "fp8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "Tiny-LLaVA" / "manifest.json").read_text())
    assert manifest["base_model_hub"] == {"repo_id": "vlmopt-test/Tiny-LLaVA", "revision": COMMIT,
                                          "requested_revision": None}
    assert Path(manifest["base_model"]).name == COMMIT  # the weights were read from the cached snapshot
    fp8 = next(v for v in manifest["variants"] if v["name"] == "fp8")
    assert fp8["verified"] and fp8["vision_intact"] is True
    assert not (out / COMMIT).exists()


def test_bad_awq_grid_setting_is_bad_input(tiny_model_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llmcompressor", reason="quantizing needs the quantize extra (scripts/setup.sh main)")
    monkeypatch.setenv("VLMOPT_AWQ_GRID", "many")
    out = tmp_path / "variants"
    result = CliRunner().invoke(app, ["quantize", str(tiny_model_dir), "--method", "awq", "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "VLMOPT_AWQ_GRID" in errors[0], result.stderr
    assert not out.exists()
