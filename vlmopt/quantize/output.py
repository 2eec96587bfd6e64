"""Safe output: a variant is written to a hidden staging folder next to its final place and renamed into place only
when it is complete and verified, so an interrupted run never leaves a half variant (issue 3, item 6)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import QuantizeInputError

STAGING_MARK = ".partial-"
# Room for tokenizer, processor and config files and for filesystem slack on top of the weights estimate.
DISK_MARGIN_BYTES = 64 * 1024**2
DISK_MARGIN_RATIO = 0.10


def staging_name(final: Path) -> str:
    return f".{final.name}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def stale_staging_dirs(parent: Path) -> list[Path]:
    """Leftovers of runs that were killed too hard to clean up (SIGKILL, power loss)."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(".") and STAGING_MARK in p.name
                  and not _owner_alive(p))


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


def remove_stale_staging(parent: Path) -> list[Path]:
    stale = stale_staging_dirs(parent)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextmanager
def staged_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it replaces `final` atomically, on any exception (including
    KeyboardInterrupt) it is removed and `final` is untouched."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not force:
        raise FileExistsError(f"{final} exists (use --force to replace it)")
    staging = final.parent / staging_name(final)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    promote(staging, final)


def promote(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; an existing `final` is first renamed aside so the swap never deletes the old
    variant before the new one is in place."""
    old = None
    if final.exists():
        old = final.parent / (staging_name(final) + "-old")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def disk_free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk_space(out_dir: Path, needed_bytes: int) -> None:
    """Refuse before starting when the estimated variants (plus a margin) do not fit."""
    required = int(needed_bytes * (1 + DISK_MARGIN_RATIO)) + DISK_MARGIN_BYTES
    free = disk_free_bytes(out_dir)
    if free < required:
        raise QuantizeInputError(
            f"not enough disk space in {out_dir}: the variants need about {required / 1024**2:,.0f} MiB "
            f"(estimate + {DISK_MARGIN_RATIO:.0%} margin), {free / 1024**2:,.0f} MiB free"
        )
