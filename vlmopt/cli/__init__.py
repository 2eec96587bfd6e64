"""The `vlmopt` command. Thin: each stage's module parses options, calls the stage, renders with rich."""

from __future__ import annotations

import typer

from . import campaign, compare, demo, dev, gpus, plan, quantize, report

app = typer.Typer(
    name="vlmopt",
    help="Quantize a vision-language model, benchmark each variant on vLLM, and plan the cheapest deployment "
    "that meets a latency SLO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        import vlmopt

        typer.echo(f"vlmopt {vlmopt.__version__}")
        raise typer.Exit()


@app.callback()
def _each_run(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="print the version"),
) -> None:
    # --data-dir holds for one command; a process that runs several (tests) starts each from the environment.
    from vlmopt.paths import set_data_dir

    set_data_dir(None)


# `campaign` registers the `benchmark` group: the plain benchmark command plus `campaign` and `collect`.
for stage in (quantize, campaign, plan, gpus, report, compare, demo, dev):
    stage.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
