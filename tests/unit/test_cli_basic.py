"""The CLI shell: every stage is listed with a real help text; errors are one line, not tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vlmopt.cli import app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("quantize", "benchmark", "plan", "gpus", "report", "demo", "dev"):
        assert command in result.output


def test_console_script_runs() -> None:
    vlmopt = Path(sys.executable).parent / "vlmopt"
    out = subprocess.run([str(vlmopt), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_tiny_model_refuses_non_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    result = runner.invoke(app, ["dev", "tiny-model", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a model folder" in result.output
    assert "Traceback" not in result.output
