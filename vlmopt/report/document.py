"""The report as data: sections of paragraphs, headline figures, tables and plots, each with its provenance.

`compose.py` fills it from the plan; `markdown.py` and `html.py` render the same document, so the two files can
never disagree on a figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from .plots import RenderedPlot


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Missing:
    """Says what the plan or the inputs lack, instead of an empty table or plot."""

    text: str


@dataclass(frozen=True)
class Figure:
    """One headline figure: what people read, plus the raw value machines check (HTML data-value)."""

    key: str
    label: str
    display: str
    raw: float | None
    comparison: str = ""


@dataclass(frozen=True)
class Headline:
    figures: list[Figure]
    provenance: str


@dataclass(frozen=True)
class Table:
    title: str
    frame: pd.DataFrame  # display strings, column names are headers
    provenance: str
    csv_name: str | None = None  # the CSV holding the raw values, when there is one


@dataclass(frozen=True)
class Plot:
    plot: RenderedPlot
    provenance: str


Block = Paragraph | Missing | Headline | Table | Plot


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    meta: list[tuple[str, str]]  # (label, value) lines under the title
    sections: list[Section]

    def plots(self) -> list[RenderedPlot]:
        return [b.plot for s in self.sections for b in s.blocks if isinstance(b, Plot)]


Formatter = Callable[[object], str]


def display_frame(frame: pd.DataFrame, columns: Mapping[str, tuple[str, Formatter | None]]) -> pd.DataFrame:
    """Select, format and rename columns: {raw column: (header, formatter or None for str())}."""
    out = pd.DataFrame(index=frame.index)
    for col, (header, fmt) in columns.items():
        out[header] = [(fmt(v) if fmt else ("" if v is None or (isinstance(v, float) and v != v) else str(v)))
                       for v in frame[col]]
    return out.reset_index(drop=True)
