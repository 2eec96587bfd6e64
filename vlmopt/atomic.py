"""Write a whole folder at once: a quantized variant, a deploy bundle, a cost report, the tiny test model.

The content goes to a hidden staging folder beside the target, which replaces the target in one rename when it is
complete. An existing target is renamed aside first and deleted only once the new folder is in place, so a reader
(or a crash) sees the old folder or the new one, never a mix. On any error, Ctrl-C included, the staging folder is
removed and the target stays as it was. A process killed too hard to clean up (SIGKILL, power loss) leaves a staging
folder whose name carries its process id; `remove_stale_staging` deletes those once that process is gone.

An existing folder is replaced only when it carries one of the caller's marker files (something vlmopt wrote there
before, such as a bundle's `.vlmopt-bundle.json` or a report's `report.md`) or is empty: a folder of the user's
own is refused, never deleted.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

STAGING_MARK = ".partial-"


class FolderNotOursError(ValueError):
    """The target folder exists and holds no marker of a previous vlmopt write: replacing it could destroy files."""


def replaceable(folder: Path, markers: Sequence[str]) -> bool:
    """True when `folder` is absent, an empty folder, or a folder holding one of the `markers` files."""
    folder = Path(folder)
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return not any(folder.iterdir()) or any((folder / marker).is_file() for marker in markers)


def check_replaceable(folder: Path, markers: Sequence[str], what: str) -> None:
    """Raise FolderNotOursError naming `folder` and the markers unless `replaceable`."""
    if not replaceable(folder, markers):
        kind = "folder" if Path(folder).is_dir() else "file"
        raise FolderNotOursError(f"{folder} exists and is not a {what} (a {kind} without {' or '.join(markers)}); "
                                 "choose another path or remove it")


def staging_name(final: Path) -> str:
    return f".{final.name}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_folder(final: Path, markers: Sequence[str], what: str = "folder") -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on normal exit it replaces `final` in one rename.

    Refuses up front (FolderNotOursError, nothing written) when `final` exists and is not `replaceable`. The caller
    must write one of `markers` into the staging folder, so that the next write may replace it.
    """
    if not markers:
        raise ValueError("atomic_folder needs at least one marker file name")
    final = Path(os.path.abspath(final))
    check_replaceable(final, markers, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / staging_name(final)
    staging.mkdir()
    try:
        yield staging
        if not any((staging / marker).is_file() for marker in markers):
            raise RuntimeError(f"{what} {final}: written without its marker ({' or '.join(markers)})")
        check_replaceable(final, markers, what)  # again: something may have appeared there meanwhile
        _swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename `staging` onto `final`; an existing `final` is moved aside first and put back if the rename fails."""
    old = None
    if final.exists():
        old = staging.with_name(staging.name + "-old")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_folder(final: Path, files: Mapping[str, str | bytes], markers: Sequence[str], what: str = "folder",
                 executable: Sequence[str] = ()) -> Path:
    """Write {relative path: text or bytes} as the whole content of `final` (see `atomic_folder`); the relative
    paths in `executable` get mode 0755. Returns the absolute path of `final`."""
    with atomic_folder(final, markers, what) as staging:
        for rel, content in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
            if rel in executable:
                target.chmod(0o755)
    return Path(os.path.abspath(final))


def stale_staging_dirs(parent: Path) -> list[Path]:
    """Staging folders in `parent` left by processes that are gone (killed too hard to clean up)."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(".") and STAGING_MARK in p.name
                  and not _owner_alive(p))


def remove_stale_staging(parent: Path) -> list[Path]:
    stale = stale_staging_dirs(parent)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _owner_alive(path: Path) -> bool:
    try:
        pid = int(path.name.split(STAGING_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["STAGING_MARK", "FolderNotOursError", "atomic_folder", "check_replaceable", "remove_stale_staging",
           "replaceable", "stale_staging_dirs", "write_folder"]
