"""The report folder is written whole (vlmopt.atomic): a reader or a crash sees the old report or the new one, and
a folder holding neither report.md nor report.html is never replaced."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vlmopt.atomic import FolderNotOursError, check_replaceable, write_folder

# Files whose presence marks a folder as ours to replace; anything else is refused rather than deleted.
REPORT_MARKERS = ("report.md", "report.html")
WHAT = "report folder"

ReportFolderError = FolderNotOursError


def check_report_folder(folder: Path) -> None:
    """Raise ReportFolderError when `folder` exists and does not hold a previous report."""
    check_replaceable(Path(folder), REPORT_MARKERS, WHAT)


def write_folder_atomically(out_dir: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write {relative path: content} as the whole content of `out_dir`, replacing a previous report there."""
    return write_folder(out_dir, files, REPORT_MARKERS, WHAT)
