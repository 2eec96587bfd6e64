"""Keep libraries' own output (progress bars, warnings, log lines) off the user's terminal: while a stage runs,
everything written to stdout/stderr by anyone but vlmopt's rich consoles goes to a log file instead.

Two levels, because libraries reach the terminal both ways: Python objects (tqdm, `warnings`, loguru and `logging`
handlers that look up `sys.stderr` when they write) through `sys.stdout`/`sys.stderr`, and handlers or native code
that hold the original stream or write to file descriptors 1 and 2 (torch's logging handler, C++ messages). The
descriptors are redirected only when they are the process's real stdout/stderr; the rich consoles keep writing to
duplicates of the originals, so vlmopt's own progress and messages still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rich.console import Console


def _real_fd(stream: object, expected: int) -> bool:
    try:
        return stream.fileno() == expected  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def captured_library_output(log_path: Path, out_console: Console, err_console: Console) -> Iterator[Path]:
    """Send library output to `log_path` (appended) for the duration; the consoles keep the terminal. Yields the
    log path. The file is created here: call it only after the input has been validated."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    # The consoles' own setting (None: follow sys.stdout/sys.stderr), not the stream the property resolves to now.
    saved_files = (getattr(out_console, "_file", None), getattr(err_console, "_file", None))
    original_out, original_err = sys.stdout, sys.stderr
    redirect_fds = _real_fd(original_out, 1) and _real_fd(original_err, 2)
    dup_out = dup_err = None
    terminal_out: IO[str] = original_out
    terminal_err: IO[str] = original_err
    if redirect_fds:
        original_out.flush()
        original_err.flush()
        dup_out, dup_err = os.dup(1), os.dup(2)
        terminal_out = os.fdopen(os.dup(dup_out), "w", buffering=1, encoding=original_out.encoding or "utf-8")
        terminal_err = os.fdopen(os.dup(dup_err), "w", buffering=1, encoding=original_err.encoding or "utf-8")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    out_console.file, err_console.file = terminal_out, terminal_err
    sys.stdout = sys.stderr = log
    try:
        yield log_path
    finally:
        sys.stdout, sys.stderr = original_out, original_err
        out_console.file, err_console.file = saved_files
        log.flush()
        if redirect_fds and dup_out is not None and dup_err is not None:
            os.dup2(dup_out, 1)
            os.dup2(dup_err, 2)
            os.close(dup_out)
            os.close(dup_err)
            terminal_out.close()
            terminal_err.close()
        log.close()


def scratch_log(prefix: str) -> Path:
    """A log file outside the output folder, for output captured before it is known whether anything is written."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)
