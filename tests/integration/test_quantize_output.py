"""Safe output: staging + atomic rename, skip unless --force, nothing half-written after an interruption, a variant
that fails verification or --max-kl is not kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmopt.atomic import STAGING_MARK
from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize
from vlmopt.quantize.verify import VerificationReport
from vlmopt.schemas import VariantManifest, load_model


def _request(model: Path, out: Path, methods: str = "int8", **kwargs) -> QuantizeRequest:
    return QuantizeRequest(model_dir=model, methods=parse_methods(methods), out_dir=out, samples=4, max_seq_len=512,
                           **kwargs)


def _staging_dirs(model_out: Path) -> list[Path]:
    return [p for p in model_out.iterdir() if STAGING_MARK in p.name] if model_out.exists() else []


def test_interrupt_leaves_no_half_variant(tiny_model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the checkpoint is saved into staging but before it is verified and moved."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vlmopt.quantize.runner.verify_variant", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(_request(tiny_model_dir, tmp_path))
    model_out = tmp_path / tiny_model_dir.name
    assert not (model_out / "int8").exists()
    assert _staging_dirs(model_out) == []
    manifest = load_model(VariantManifest, model_out / "manifest.json")
    assert [v.name for v in manifest.variants] == ["bf16"]


def test_failed_verification_is_not_kept(tiny_model_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vlmopt.quantize.runner.verify_variant",
                        lambda *a, **k: VerificationReport(problems=["targeted Linear x is not quantized"]))
    result = run_quantize(_request(tiny_model_dir, tmp_path))
    [outcome] = result.outcomes
    assert outcome.status == "failed" and "targeted Linear x is not quantized" in outcome.message
    assert not result.ok
    model_out = tmp_path / tiny_model_dir.name
    assert not (model_out / "int8").exists() and _staging_dirs(model_out) == []
    manifest = load_model(VariantManifest, result.manifest_path)
    assert [r.name for r in manifest.rejected] == ["int8"]
    assert "int8" not in [v.name for v in manifest.variants]


def test_max_kl_rejects_and_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_quantize(_request(tiny_model_dir, tmp_path, methods="fp8", max_kl=1e-9))
    [outcome] = result.outcomes
    assert outcome.status == "rejected" and "--max-kl" in outcome.message
    assert outcome.fidelity is not None and outcome.fidelity.mean_kl > 1e-9
    assert not (tmp_path / tiny_model_dir.name / "fp8").exists()
    manifest = load_model(VariantManifest, result.manifest_path)
    assert manifest.rejected[0].fidelity is not None


def test_existing_variant_skipped_unless_force(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = run_quantize(_request(tiny_model_dir, tmp_path))
    assert first.outcomes[0].status == "created"
    weights = tmp_path / tiny_model_dir.name / "int8" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_quantize(_request(tiny_model_dir, tmp_path))
    assert again.outcomes[0].status == "skipped" and weights.stat().st_mtime_ns == stamp
    assert [v.name for v in again.manifest.variants] == ["bf16", "int8"]
    forced = run_quantize(_request(tiny_model_dir, tmp_path, force=True))
    assert forced.outcomes[0].status == "created"
    assert weights.stat().st_mtime_ns != stamp
    assert _staging_dirs(tmp_path / tiny_model_dir.name) == []


def test_force_replaces_only_a_folder_vlmopt_wrote(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A user's own folder where the variant goes (no quantize.log) is refused, not deleted, even with --force."""
    theirs = tmp_path / tiny_model_dir.name / "int8"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    result = run_quantize(_request(tiny_model_dir, tmp_path, force=True))
    [outcome] = result.outcomes
    assert outcome.status == "failed" and "not a vlmopt variant" in outcome.message, outcome.message
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert _staging_dirs(tmp_path / tiny_model_dir.name) == []


def test_killed_process_leaves_no_variant_and_next_run_cleans_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGKILL (no chance to clean up) in the middle of GPTQ: only a hidden staging folder remains, never a variant;
    the next run removes it."""
    model_out = tmp_path / tiny_model_dir.name
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-c", "from vlmopt.cli import main; main()", "quantize", str(tiny_model_dir),
           "--method", "gptq", "--samples", "4", "--max-seq-len", "512", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not _staging_dirs(model_out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert _staging_dirs(model_out), "the run never started a variant"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (model_out / "gptq").exists()
    assert len(_staging_dirs(model_out)) == 1

    result = run_quantize(_request(tiny_model_dir, tmp_path, methods="fp8"))
    assert any("interrupted run" in w for w in result.warnings)
    assert _staging_dirs(model_out) == []
    assert not (model_out / "gptq").exists() and (model_out / "fp8").is_dir()
