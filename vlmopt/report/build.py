"""`build_report`: plan (+ profiles, manifests) -> report.md, report.html, plots/*.png and CSV tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.schemas import BenchmarkProfile, Plan, VariantManifest, utc_now_iso

from .compose import collect, compose
from .html import render_html
from .markdown import plot_path, render_markdown
from .writer import check_report_folder, write_folder_atomically


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    markdown: Path
    html: Path
    csv: dict[str, Path] = field(default_factory=dict)  # file name -> path
    plots: dict[str, Path] = field(default_factory=dict)  # plot name -> PNG path (the HTML embeds the same bytes)


def build_report(
    plan: Plan,
    out_dir: Path,
    profiles: Sequence[BenchmarkProfile] = (),
    manifests: Sequence[VariantManifest] = (),
    generated: str | None = None,
) -> ReportPaths:
    """Render the cost report of `plan` into `out_dir`, replacing a previous report there in one rename.

    `generated` is the timestamp printed in the report (default: now, UTC). Raises writer.ReportFolderError
    when `out_dir` exists and holds something other than a report.
    """
    check_report_folder(Path(out_dir))  # fail before the seconds spent drawing, not after
    data = collect(plan, list(profiles), list(manifests))
    doc = compose(data, generated or utc_now_iso())
    files: dict[str, str | bytes] = {"report.md": render_markdown(doc), "report.html": render_html(doc)}
    for name, frame in data.csv_tables().items():
        files[name] = frame.to_csv(index=False)
    for plot in doc.plots():
        files[plot_path(plot.name)] = plot.png
    final = write_folder_atomically(Path(out_dir), files)
    return ReportPaths(
        out_dir=final,
        markdown=final / "report.md",
        html=final / "report.html",
        csv={name: final / name for name in data.csv_tables()},
        plots={plot.name: final / plot_path(plot.name) for plot in doc.plots()},
    )
