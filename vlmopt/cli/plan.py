"""`vlmopt plan`."""

from __future__ import annotations

import typer

from ._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "plan",
        help="Pick the cheapest mix of variant, GPU, MIG slice and spot/on-demand capacity that meets the SLO, and write a deploy bundle.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def plan_cmd() -> None:
        not_built("vlmopt plan", "see the open issues")
