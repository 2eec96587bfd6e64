"""The `vlmopt` command. Thin: each stage's module parses options, calls the stage, renders with rich."""

from __future__ import annotations

import typer

from . import benchmark, compare, demo, dev, gpus, plan, quantize, report

app = typer.Typer(
    name="vlmopt",
    help="Quantize a vision-language model, benchmark each variant on vLLM, and plan the cheapest deployment "
    "that meets a latency SLO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for stage in (quantize, benchmark, plan, gpus, report, compare, demo, dev):
    stage.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
