"""`vlmopt quantize` keeps the libraries' own output off the terminal: a real process (not CliRunner, whose capture
would miss what torch and loguru write to the real stdout/stderr) quantizes the tiny VLM with a data-free and a
calibrated method, and its stdout and stderr carry vlmopt's lines only; the libraries' lines are in the log file it
names. With --verbose they reach the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# What llm-compressor, compressed-tensors, torch, tqdm and transformers print on their own during a run.
LIBRARY_LINES = ("Dispatching model", "Applying quantization config", "is_fx_tracing", "No accelerator available",
                 "it/s]", "| INFO", "| WARNING", "UserWarning", "Compressing model")


def _quantize(model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "80", "TERM": "dumb"}
    env.pop("TQDM_DISABLE", None)
    env.pop("LLM_COMPRESSOR_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", "from vlmopt.cli import main; main()", "quantize", str(model),
                           "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=900, check=False, cwd=REPO_ROOT)


def _needs_quantize_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("llmcompressor") is None:  # found without importing it (it prints on import)
        pytest.skip("quantizing needs the quantize extra (scripts/setup.sh main)")


def test_default_run_prints_no_library_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    _needs_quantize_extra()
    run = _quantize(tiny_model_dir, tmp_path / "variants", "--method", "fp8,gptq", "--samples", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    terminal = run.stdout + run.stderr
    leaked = [marker for marker in LIBRARY_LINES if marker in terminal]
    assert not leaked, f"library output reached the terminal: {leaked}\n{terminal[-3000:]}"
    assert "variant" in run.stdout and "gptq" in run.stdout  # the summary table itself is there
    match = re.search(r"library output \(progress, warnings\): (\S+\.log)", run.stderr)
    assert match, run.stderr
    log = Path(match.group(1))
    assert log.is_file() and log.parent == tmp_path / "variants" / tiny_model_dir.name / "logs"
    captured = log.read_text()
    assert "No accelerator available" in captured  # captured, not lost


def test_verbose_shows_library_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    _needs_quantize_extra()
    run = _quantize(tiny_model_dir, tmp_path / "variants", "--method", "fp8", "--verbose")
    assert run.returncode == 0, run.stderr[-3000:]
    terminal = run.stdout + run.stderr
    assert "No accelerator available" in terminal or "Applying quantization config" in terminal, terminal[-3000:]
    assert not (tmp_path / "variants" / tiny_model_dir.name / "logs").exists()
