"""`vlmopt benchmark`."""

from __future__ import annotations

import typer

from ._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "benchmark",
        help="Serve each variant with vLLM and measure TTFT, TPOT, ITL, E2EL, throughput and goodput under image+text load.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def benchmark_cmd() -> None:
        not_built("vlmopt benchmark", "see the open issues")
