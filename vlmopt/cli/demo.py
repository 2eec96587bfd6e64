"""`vlmopt demo`: the whole chain on a tiny offline VLM on this machine, with progress throughout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._common import DATA_DIR_HELP, EXIT_FAILED, console, err_console, fail, use_data_dir


class RichDemoUI:
    def __init__(self) -> None:
        from vlmopt.demo.common import TOTAL_STEPS

        self.total = TOTAL_STEPS

    def step(self, index: int, title: str) -> None:
        console.rule(f"[bold]{index}/{self.total} {title}")

    def info(self, text: str) -> None:
        console.print(f"  {text}", highlight=False)

    def warn(self, text: str) -> None:
        console.print(f"  [yellow]{text}[/]", highlight=False)

    @contextmanager
    def bench_progress(self) -> Iterator[object]:
        """One live progress display per variant's benchmark, stopped when it ends (also on errors)."""
        from .benchmark import RichProgress

        progress = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console)
        with progress:
            yield RichProgress(progress)


def _summary_table(summary) -> Table:
    table = Table(title="vlmopt demo", title_justify="left")
    for column in ("step", "status", "seconds", "detail"):
        table.add_column(column, overflow="fold")
    colour = {"done": "green", "skipped": "yellow", "failed": "red"}
    for step in summary.steps:
        table.add_row(step.step, f"[{colour[step.status]}]{step.status}[/]", f"{step.seconds:.1f}", step.detail)
    return table


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        help="Run the whole chain on a tiny offline VLM on this machine: quantize, benchmark, plan, deploy bundle, "
        "report. Works on CPU (after scripts/setup.sh).",
    )
    def demo_cmd(
        out: Path = typer.Option(Path("demo-output"), "--out", help="folder for everything the demo writes"),
        methods: str = typer.Option("fp8,int8,gptq,awq", "--methods", help="quantization methods"),
        concurrency: str = typer.Option("1,4", "--concurrency", help="benchmark load points (concurrency)"),
        num_prompts: int = typer.Option(16, "--num-prompts", help="requests per load point"),
        output_tokens: int = typer.Option(16, "--output-tokens", help="output tokens per request"),
        skip_benchmark: bool = typer.Option(False, "--skip-benchmark", help="quantize and plan only"),
        force: bool = typer.Option(False, "--force", help="redo every step instead of reusing earlier results"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        from vlmopt.demo import DemoOptions, run_demo

        use_data_dir(data_dir)
        try:
            levels = [int(c) for c in concurrency.split(",") if c.strip()]
        except ValueError:
            fail(f"--concurrency: {concurrency!r} is not a comma-separated list of integers")
        if not levels or min(levels) < 1:
            fail("--concurrency: every level must be >= 1")
        if num_prompts < 1 or output_tokens < 1:
            fail("--num-prompts and --output-tokens must be >= 1")
        options = DemoOptions(out_dir=out, methods=methods, concurrency=levels, num_prompts=num_prompts,
                              output_tokens=output_tokens, skip_benchmark=skip_benchmark, force=force)
        from ._capture import captured_library_output
        from .quantize import quiet_quantize_libraries

        # llm-compressor's, torch's and tqdm's own output would drown the demo's progress: it goes to a log file.
        library_log = Path(out).expanduser().resolve() / "logs" / "libraries.log"
        try:
            with captured_library_output(library_log, console, err_console):
                quiet_quantize_libraries(library_log)
                summary = run_demo(options, RichDemoUI())
            console.print(f"[dim]library output (progress, warnings): {library_log}[/]", highlight=False,
                          soft_wrap=True)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]; what was done is in {out / 'demo-summary.json'}")
            raise typer.Exit(130) from None
        console.print(_summary_table(summary))
        for label, path in (("local plan", summary.local_plan), ("local report", summary.local_report),
                            ("cloud plan", summary.cloud_plan), ("cloud report", summary.cloud_report)):
            if path:
                console.print(f"{label}: {path}", highlight=False)
        if any(s.status == "failed" for s in summary.steps):
            console.print(f"[red]some steps failed[/]; details in {Path(summary.out_dir) / 'demo-summary.json'}")
            raise typer.Exit(EXIT_FAILED)
        report = summary.cloud_report or summary.local_report
        console.print(f"[bold green]Done.[/] Open the cost report: {report}", highlight=False)
