"""Render the report document as GitHub-flavoured markdown; plots are referenced as PNG files beside it."""

from __future__ import annotations

import pandas as pd

from .document import Document, Headline, Missing, Paragraph, Plot, Table

PLOTS_DIR = "plots"


def _cell(text: object) -> str:
    # A pipe ends a cell and a newline ends the row; neither may survive inside one.
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def plot_path(name: str) -> str:
    return f"{PLOTS_DIR}/{name}.png"


def render_markdown(doc: Document) -> str:
    out: list[str] = [f"# {doc.title}", ""]
    out += [f"- {label}: {value}" for label, value in doc.meta]
    out.append("")
    out.append("Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in doc.sections))
    for section in doc.sections:
        out += ["", f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Missing):
                out += [f"> **Not shown:** {block.text}", ""]
            elif isinstance(block, Headline):
                for fig in block.figures:
                    extra = f" ({fig.comparison})" if fig.comparison else ""
                    out.append(f"- **{fig.label}:** {fig.display}{extra}")
                out += ["", f"*Source: {block.provenance}*", ""]
            elif isinstance(block, Table):
                csv = f" (CSV: `{block.csv_name}`)" if block.csv_name else ""
                out += [f"**{block.title}**{csv}", "", markdown_table(block.frame), "",
                        f"*Source: {block.provenance}*", ""]
            elif isinstance(block, Plot):
                out += [f"![{block.plot.alt}]({plot_path(block.plot.name)})", "",
                        f"*{block.plot.title}. Source: {block.provenance}*", ""]
    return "\n".join(out).rstrip() + "\n"
