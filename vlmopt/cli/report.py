"""`vlmopt report`."""

from __future__ import annotations

import typer

from ._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help="Regenerate the cost report (markdown + self-contained HTML with plots) from a plan folder.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def report_cmd() -> None:
        not_built("vlmopt report", "see the open issues")
