"""Console and error conventions shared by every command: one clear line and exit code 2 for bad input."""

from __future__ import annotations

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


def not_built(stage: str, issue: str) -> NoReturn:
    err_console.print(f"[yellow]{stage} is not built yet[/] ({issue}).", highlight=False)
    raise typer.Exit(EXIT_FAILED)
