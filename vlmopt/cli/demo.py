"""`vlmopt demo`."""

from __future__ import annotations

import typer

from ._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        help="Run the whole chain on a tiny offline VLM on this machine: quantize, benchmark, plan, deploy bundle, report.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def demo_cmd() -> None:
        not_built("vlmopt demo", "see the open issues")
