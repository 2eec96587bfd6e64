"""Room for the variants: refuse a run whose estimated output does not fit on the disk before any work starts.
(Each variant is written whole by vlmopt.atomic, so an interrupted run never leaves a half variant.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import QuantizeInputError

# Room for tokenizer, processor and config files and for filesystem slack on top of the weights estimate.
DISK_MARGIN_BYTES = 64 * 1024**2
DISK_MARGIN_RATIO = 0.10


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
