"""Bad input: one clear line on stderr, exit code 2, nothing written. Plus the text-only case, which is quantized
with a warning that the vision rules did not apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmopt.cli import app


def _run(*args: str):
    return CliRunner().invoke(app, ["quantize", *args])


def _assert_bad_input(result, out: Path, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    assert "Traceback" not in result.output
    assert not out.exists(), f"bad input wrote {list(out.rglob('*'))}"


def test_missing_model_path(tmp_path: Path) -> None:
    _assert_bad_input(_run(str(tmp_path / "nope"), "--out", str(tmp_path / "out")), tmp_path / "out",
                      "no such folder")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    _assert_bad_input(_run(str(tmp_path / "notes"), "--out", str(tmp_path / "out")), tmp_path / "out",
                      "not a model folder")


def test_unknown_method(tiny_model_dir: Path, tmp_path: Path) -> None:
    _assert_bad_input(_run(str(tiny_model_dir), "--method", "fp8,awq4", "--out", str(tmp_path / "out")),
                      tmp_path / "out", "unknown method 'awq4'")


def test_empty_calibration_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "calib").mkdir()
    _assert_bad_input(_run(str(tiny_model_dir), "--method", "gptq", "--calib", str(tmp_path / "calib"),
                           "--out", str(tmp_path / "out")), tmp_path / "out", "no images")


def test_unreadable_calibration_image(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "broken.png").write_bytes(b"not a png at all")
    _assert_bad_input(_run(str(tiny_model_dir), "--method", "awq", "--calib", str(tmp_path / "calib"),
                           "--out", str(tmp_path / "out")), tmp_path / "out", "cannot read image", "broken.png")


def test_jsonl_row_without_image(tiny_model_dir: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib.jsonl"
    calib.write_text(json.dumps({"image": "missing.png", "prompt": "What is this?"}) + "\n")
    _assert_bad_input(_run(str(tiny_model_dir), "--method", "gptq", "--calib", str(calib),
                           "--out", str(tmp_path / "out")), tmp_path / "out", "calib.jsonl:1", "not found")


def test_unknown_multimodal_architecture_names_ignore(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "mystery"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "mystery_vlm"
    (model / "config.json").write_text(json.dumps(config))
    _assert_bad_input(_run(str(model), "--out", str(tmp_path / "out")), tmp_path / "out",
                      "unknown multimodal architecture", "--ignore")


def test_not_enough_disk(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vlmopt.quantize.output.disk_free_bytes", lambda path: 10 * 1024**2)
    _assert_bad_input(_run(str(tiny_model_dir), "--method", "fp8", "--out", str(tmp_path / "out")),
                      tmp_path / "out", "not enough disk space")


def test_linear_not_fitting_group_size_is_named(tmp_path: Path) -> None:
    from vlmopt.testing import TinyVlmSpec, build_tiny_vlm

    # intermediate 320: down_proj has in_features 320, not a multiple of the W4A16 group size 128.
    model = build_tiny_vlm(tmp_path / "odd-llava", TinyVlmSpec(seed=1, text_intermediate=320))
    _assert_bad_input(_run(str(model), "--method", "fp8,gptq", "--samples", "2", "--out", str(tmp_path / "out")),
                      tmp_path / "out", "model.language_model.layers.0.mlp.down_proj", "in_features=320", "128")


@pytest.fixture(scope="module")
def text_only_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmopt.testing import TinyVlmSpec
    from vlmopt.testing.tiny_vlm import build_tokenizer

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = build_tokenizer(TinyVlmSpec())
    config = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_text_only_model_is_quantized_with_a_warning(text_only_model: Path, tmp_path: Path) -> None:
    result = _run(str(text_only_model), "--method", "int8", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "vision rules did not apply" in result.stderr
    manifest = json.loads((tmp_path / "out" / "tiny-llama" / "manifest.json").read_text())
    [variant] = [v for v in manifest["variants"] if v["name"] == "int8"]
    assert variant["verified"] and variant["vision_intact"] is None
    assert any("text-only" in note for note in variant["notes"])
    assert variant["fidelity"]["prompts"] == 8
