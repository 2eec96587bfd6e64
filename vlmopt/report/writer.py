"""Write a folder of files all at once: build it beside the target, then swap it in with renames.

A reader (or a crash) never sees a half-written report: either the old folder or the complete new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

# Files whose presence marks a folder as ours to replace; anything else is refused rather than deleted.
REPORT_MARKERS = ("report.md", "report.html")


class ReportFolderError(ValueError):
    """The output folder exists and does not hold a previous report, so replacing it could destroy user files."""


def replaceable(folder: Path) -> bool:
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return not any(folder.iterdir()) or any((folder / name).is_file() for name in REPORT_MARKERS)


def write_folder_atomically(out_dir: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write {relative path: content} as the whole content of `out_dir`, replacing a previous report there."""
    out_dir = Path(os.path.abspath(out_dir))
    if not replaceable(out_dir):
        raise ReportFolderError(f"{out_dir} exists and is not a report folder (no report.md or report.html in "
                                "it); choose another --out or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    previous: Path | None = None
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a report folder is meant to be shared
        for rel, content in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        if out_dir.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            previous.rmdir()
            os.replace(out_dir, previous)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous is not None and previous.exists() and not out_dir.exists():
            os.replace(previous, out_dir)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return out_dir
