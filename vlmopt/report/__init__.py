"""Cost report: markdown + self-contained HTML with plots, and the tables as CSV (docs/report.md).

Modules, one job each: tables (raw DataFrames), plots (PNG charts), recommendation (the paragraph), compose
(sections with provenance), markdown / html (renderers), writer (atomic folder swap), build (the entry point),
inputs (reading plan, profiles and manifests from disk for the CLI).
"""

from .build import ReportPaths, build_report
from .writer import ReportFolderError

__all__ = ["ReportFolderError", "ReportPaths", "build_report"]
