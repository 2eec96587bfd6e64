"""`vlmopt quantize`: parse options, run the quantize stage with rich progress, render the summary table."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import typer
from rich import box
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._capture import captured_library_output, scratch_log
from ._common import EXIT_FAILED, console, err_console, fail

DEFAULT_METHODS = "fp8,int8,gptq,awq"


def quiet_quantize_libraries(log_path: Path | None = None) -> int | None:
    """Turn llm-compressor's console logging and the libraries' progress bars off (the rich progress replaces them;
    a bar in a log file is noise); with `log_path`, llm-compressor's INFO+ lines go there. Each variant's full DEBUG
    log still goes to its own quantize.log. Returns the loguru sink id (for `logger.remove`), None without a path."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # effective where tqdm is not imported yet
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from llmcompressor.logger import LoggerConfig, configure_logger
    from loguru import logger
    from transformers.utils import logging as hf_logging

    configure_logger(LoggerConfig(console_log_level=None))
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    if log_path is None:
        return None
    return logger.add(str(log_path), level="INFO", format="{time:YYYY-MM-DDTHH:mm:ss} | {name} | {level} - {message}")


def _library_log_path(out: Path, model_name: str) -> Path:
    return Path(out).expanduser().resolve() / model_name / "logs" / f"quantize-{time.strftime('%Y%m%dT%H%M%S')}.log"


def _keep_log(scratch: Path | None, out: Path, model_name: str | None) -> Path | None:
    """Move the captured library output next to the variants (only if the run wrote that folder: bad input writes
    nothing); otherwise drop it."""
    if scratch is None or not scratch.exists():
        return None
    model_out = Path(out).expanduser().resolve() / model_name if model_name else None
    if model_out is None or not model_out.is_dir() or scratch.stat().st_size == 0:
        scratch.unlink(missing_ok=True)
        return None
    target = _library_log_path(out, model_name)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(scratch), target)
    return target


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f}M" if n < 1024**3 else f"{n / 1024**3:.2f}G"


def _seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 100 else f"{s:.0f}s"


# (header, justify). Headers are short and never cut: each column is at least as wide as its header, and only the
# variant column may wrap, so the table fits an 80-column terminal even with a long --suffix.
SUMMARY_COLUMNS = (("variant", "left"), ("scheme", "left"), ("size", "right"), ("ratio", "right"),
                   ("time", "right"), ("peak mem", "right"), ("mean KL", "right"), ("top-1", "right"))


def render_summary(result) -> Table:  # QuantizeResult; imported lazily so the CLI starts without torch
    from vlmopt.quantize.manifest import BASELINE_NAME, machine_label

    manifest = result.manifest
    baseline = manifest.variant(BASELINE_NAME)
    table = Table(title=f"{manifest.architecture} variants -> {result.manifest_path}",
                  caption=f"measured on {machine_label()}; (kept): measured by the run that made it. ratio: bf16 "
                          "size / size. time: whole variant (load, oneshot, scoring, save, verify). KL, top-1: vs "
                          "bf16 on held-out image+text prompts. peak mem: CPU RSS or GPU allocated.",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left",
                  caption_justify="left")
    for header, justify in SUMMARY_COLUMNS:
        table.add_column(header, justify=justify, no_wrap=header != "variant", min_width=len(header),
                         overflow="fold")
    table.add_row("bf16", "BF16", _size(baseline.bytes_on_disk), "1.00x", "-", "-", "-", "-")
    by_name = {v.name: v for v in manifest.variants}
    for outcome in result.outcomes:
        variant = outcome.variant or by_name.get(outcome.name)
        status = {"created": "", "skipped": " [dim](kept)[/]", "rejected": " [red](rejected)[/]",
                  "failed": " [red](failed)[/]"}[outcome.status]
        label = outcome.name + status
        if variant is None:
            fid = outcome.fidelity
            table.add_row(label, outcome.spec.scheme, "-", "-", "-", "-",
                          f"{fid.mean_kl:.1e}" if fid else "-", f"{fid.top1_agreement:.1%}" if fid else "-")
            continue
        fidelity = variant.fidelity
        table.add_row(
            label, variant.scheme, _size(variant.bytes_on_disk),
            f"{baseline.bytes_on_disk / variant.bytes_on_disk:.2f}x" if variant.bytes_on_disk else "-",
            _seconds(variant.wall_time_s), _size(variant.peak_memory_bytes) if variant.peak_memory_bytes else "-",
            f"{fidelity.mean_kl:.1e}" if fidelity else "-", f"{fidelity.top1_agreement:.1%}" if fidelity else "-",
        )
    return table


def _announce_download(repo_id: str) -> None:
    err_console.print(f"[dim]{repo_id}: checking the Hugging Face hub (downloads what the cache lacks)[/]",
                      highlight=False)


def register(app: typer.Typer) -> None:
    @app.command(
        "quantize",
        help="Quantize a VLM into AWQ, GPTQ, FP8 and INT8 variants, keeping the vision tower in bf16, and score each "
        "against the bf16 model.",
    )
    def quantize_cmd(
        model: str = typer.Argument(..., metavar="MODEL",
                                    help="bf16 model: a local folder (config.json + safetensors) or a hub id such as "
                                    "Qwen/Qwen2.5-VL-7B-Instruct[@revision], taken from the Hugging Face cache "
                                    "(downloaded unless HF_HUB_OFFLINE=1)."),
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
        verbose: bool = typer.Option(False, "--verbose", "-v",
                                     help="Show the libraries' own progress bars, warnings and log lines. By default "
                                     "they go to OUT/<model>/logs/quantize-<time>.log."),
    ) -> None:
        if not verbose:
            # tqdm reads TQDM_* when it is first imported: set before any library is, so bars stay out of the log too
            os.environ.setdefault("TQDM_DISABLE", "1")
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
        from vlmopt.hub import ModelNotFound, resolve_model

        try:
            methods = parse_methods(method)
            source = parse_source(calib)
        except QuantizeInputError as exc:
            fail(str(exc))
        scratch = None if verbose else scratch_log("vlmopt-quantize-")
        capture = contextlib.nullcontext() if scratch is None else \
            captured_library_output(scratch, console, err_console)
        error: str | None = None
        model_name: str | None = None
        result = None
        try:
            with capture:
                sink = None
                try:
                    if scratch is not None:
                        from huggingface_hub.utils import disable_progress_bars

                        disable_progress_bars()  # a download's bars would only clutter the log
                    resolved = resolve_model(model, what="MODEL", on_download=_announce_download)
                    sink = None if scratch is None else quiet_quantize_libraries(scratch)
                    request = QuantizeRequest(
                        model_dir=resolved.path, hub=resolved.hub, methods=methods, out_dir=out, calib=source,
                        samples=samples, max_seq_len=max_seq_len, ignore=ignore or None, max_kl=max_kl, force=force,
                        name_suffix=suffix,
                    )
                    model_name = request.model_name
                    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[variant]}[/] {task.description}"),
                                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
                        task = progress.add_task("starting", variant="")

                        def on_stage(variant: str, stage: str) -> None:
                            progress.update(task, description=stage, variant=variant)
                            progress.console.print(f"[dim]{variant}: {stage}[/]", highlight=False)

                        result = run_quantize(request, on_stage)
                except (QuantizeInputError, ModelNotFound) as exc:
                    error = str(exc)
                finally:
                    if sink is not None:
                        from loguru import logger

                        logger.remove(sink)
        except KeyboardInterrupt:
            kept = _keep_log(scratch, out, model_name)
            err_console.print("[yellow]interrupted[/]: no partial variant was kept"
                              + (f" (library output: {kept})" if kept else ""), highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except BaseException:
            if scratch is not None and scratch.exists():  # an unexpected crash: keep what the libraries said
                kept = _keep_log(scratch, out, model_name) or scratch
                err_console.print(f"library output of this run: {kept}", highlight=False, soft_wrap=True)
            raise
        kept = _keep_log(scratch, out, model_name)
        if error is not None or result is None:
            fail(error or "quantize produced no result")
        for warning in result.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        console.print(render_summary(result))
        for outcome in result.outcomes:
            if outcome.status in ("rejected", "failed"):
                err_console.print(f"[red]{outcome.name} {outcome.status}:[/] {outcome.message}", highlight=False)
        if kept is not None:
            err_console.print(f"[dim]library output (progress, warnings): {kept}[/]", highlight=False, soft_wrap=True)
        if not result.ok:
            raise typer.Exit(EXIT_FAILED)
