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


@app.callback()
def _each_run() -> None:
    # --data-dir holds for one command; a process that runs several (tests) starts each from the environment.
    from vlmopt.paths import set_data_dir

    set_data_dir(None)


for stage in (quantize, benchmark, plan, gpus, report, compare, demo, dev):
    stage.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
