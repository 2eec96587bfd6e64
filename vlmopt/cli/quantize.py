"""`vlmopt quantize`."""

from __future__ import annotations

import typer

from ._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "quantize",
        help="Quantize a VLM into AWQ, GPTQ, FP8 and INT8 variants, keeping the vision tower in bf16, and score each against the bf16 model.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def quantize_cmd() -> None:
        not_built("vlmopt quantize", "see the open issues")
