"""`vlmopt quantize`: parse options, run the quantize stage with rich progress, render the summary table."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._common import EXIT_FAILED, console, err_console, fail

DEFAULT_METHODS = "fp8,int8,gptq,awq"


def quiet_quantize_libraries() -> None:
    """llm-compressor, tqdm and transformers print their own progress; the rich progress replaces it on the console
    (llm-compressor's log still goes to each variant's quantize.log)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    # llm-compressor logs "No accelerator available!" to stdout while it is imported; only errors until then.
    level_was_set = "LLM_COMPRESSOR_LOG_LEVEL" in os.environ
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")
    from llmcompressor.logger import LoggerConfig, configure_logger

    if not level_was_set:
        del os.environ["LLM_COMPRESSOR_LOG_LEVEL"]
    from transformers.utils import logging as hf_logging

    configure_logger(LoggerConfig(console_log_level=None))
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.1f}M" if n < 1024**3 else f"{n / 1024**3:,.2f}G"


def render_summary(result) -> Table:  # QuantizeResult; imported lazily so the CLI starts without torch
    from vlmopt.quantize.manifest import BASELINE_NAME, machine_label

    manifest = result.manifest
    baseline = manifest.variant(BASELINE_NAME)
    table = Table(title=f"{manifest.architecture} variants -> {result.manifest_path}",
                  caption=f"measured on {machine_label()} ((kept): by the run that made it). ratio: bf16 size / "
                          "size. KL, top-1: vs bf16, held-out image+text prompts. peak mem: CPU RSS or GPU allocated.")
    for column in ("method", "scheme", "size", "ratio", "time", "peak mem", "mean KL", "top-1"):
        table.add_column(column, justify="left" if column in ("method", "scheme") else "right", no_wrap=True)
    table.add_row("bf16", "BF16", _mib(baseline.bytes_on_disk), "1.00x", "-", "-", "-", "-")
    by_name = {v.name: v for v in manifest.variants}
    for outcome in result.outcomes:
        variant = outcome.variant or by_name.get(outcome.name)
        status = {"created": "", "skipped": " [dim](kept)[/]", "rejected": " [red](rejected)[/]",
                  "failed": " [red](failed)[/]"}[outcome.status]
        label = outcome.name + status
        if variant is None:
            fid = outcome.fidelity
            table.add_row(label, outcome.spec.scheme, "-", "-", "-", "-",
                          f"{fid.mean_kl:.2e}" if fid else "-", f"{fid.top1_agreement:.1%}" if fid else "-")
            continue
        fidelity = variant.fidelity
        table.add_row(
            label, variant.scheme, _mib(variant.bytes_on_disk),
            f"{baseline.bytes_on_disk / variant.bytes_on_disk:.2f}x" if variant.bytes_on_disk else "-",
            f"{variant.wall_time_s:.1f} s", _mib(variant.peak_memory_bytes) if variant.peak_memory_bytes else "-",
            f"{fidelity.mean_kl:.2e}" if fidelity else "-", f"{fidelity.top1_agreement:.1%}" if fidelity else "-",
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command(
        "quantize",
        help="Quantize a VLM into AWQ, GPTQ, FP8 and INT8 variants, keeping the vision tower in bf16, and score each "
        "against the bf16 model.",
    )
    def quantize_cmd(
        model_dir: Path = typer.Argument(..., help="Local bf16 model folder (config.json + safetensors)."),
        method: str = typer.Option(DEFAULT_METHODS, "--method", "-m",
                                   help="Comma-separated methods: fp8 (FP8_DYNAMIC), int8 (W8A8), gptq (W4A16), "
                                   "awq (W4A16_ASYM)."),
        out: Path = typer.Option(Path("variants"), "--out", "-o", help="Output root; writes OUT/<model>/."),
        calib: str = typer.Option("synthetic", "--calib",
                                  help="'synthetic' (built-in, offline), a folder of images (+ optional same-name "
                                  ".txt captions) or a .jsonl of {image, prompt}."),
        samples: int = typer.Option(64, "--samples", help="Calibration samples (gptq, awq)."),
        max_seq_len: int = typer.Option(2048, "--max-seq-len", help="Longest calibration sample, in tokens."),
        ignore: list[str] = typer.Option(None, "--ignore",
                                         help="Module to keep in bf16 (name or re:REGEX); repeat it. Replaces the "
                                         "architecture's rules: name the vision tower, projector and lm_head too."),
        max_kl: float = typer.Option(None, "--max-kl", help="Reject a variant whose mean KL vs bf16 is above this."),
        force: bool = typer.Option(False, "--force", help="Redo variants that already exist."),
        suffix: str = typer.Option("", "--suffix",
                                   help="Append to variant names (e.g. with --ignore, to keep the default ones)."),
    ) -> None:
        try:
            from vlmopt.quantize import (
                QuantizeInputError,
                QuantizeRequest,
                parse_methods,
                parse_source,
                run_quantize,
            )
        except ImportError as exc:  # torch/llm-compressor live in the `quantize` extra
            fail(f"vlmopt quantize needs the quantize extra (pip install 'vlmopt[quantize]'): {exc}")
        try:
            request = QuantizeRequest(
                model_dir=model_dir, methods=parse_methods(method), out_dir=out, calib=parse_source(calib),
                samples=samples, max_seq_len=max_seq_len, ignore=ignore or None, max_kl=max_kl, force=force,
                name_suffix=suffix,
            )
            quiet_quantize_libraries()
            with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[variant]}[/] {task.description}"),
                          TimeElapsedColumn(), console=err_console, transient=True) as progress:
                task = progress.add_task("starting", variant="")

                def on_stage(variant: str, stage: str) -> None:
                    progress.update(task, description=stage, variant=variant)
                    progress.console.print(f"[dim]{variant}: {stage}[/]", highlight=False)

                result = run_quantize(request, on_stage)
        except QuantizeInputError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: no partial variant was kept", highlight=False)
            raise typer.Exit(130) from None
        for warning in result.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        console.print(render_summary(result))
        for outcome in result.outcomes:
            if outcome.status in ("rejected", "failed"):
                err_console.print(f"[red]{outcome.name} {outcome.status}:[/] {outcome.message}", highlight=False)
        if not result.ok:
            raise typer.Exit(EXIT_FAILED)
