"""Console and error conventions shared by every command: one clear line and exit code 2 for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: message` on stderr (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


DATA_DIR_HELP = ("folder laid out like the bundled vlmopt/data (gpus.yaml, prices.yaml, models/, workloads/); its "
                 "files replace the bundled ones of the same name (default: $VLMOPT_DATA_DIR, else bundled only)")


def use_data_dir(folder: Path | None) -> None:
    """Apply a command's --data-dir for the rest of the run; exit 2 when it is not a folder."""
    from vlmopt.paths import set_data_dir
    from vlmopt.schemas.common import ContractError

    try:
        set_data_dir(folder)
    except ContractError as exc:
        fail(str(exc))
