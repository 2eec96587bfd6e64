"""`vlmopt benchmark`: parse options, run the targets (vlmopt.bench.schedule), show live progress and a summary."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._common import EXIT_FAILED, console, err_console, fail

EXIT_INTERRUPTED = 130


def _csv_numbers(text: str, what: str, kind: type) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{what}: {text!r} is not a comma-separated list of numbers")
    if not values or any(v <= 0 for v in values):
        fail(f"{what}: every value must be > 0 (got {text!r})")
    return values


class RichProgress:
    """Live progress: one bar per load point; messages above it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._task = None
        self._variant = ""
        self._lock = threading.Lock()
        self._failed = 0

    def variant_started(self, target, profile_path: Path) -> None:
        self._variant = target.variant
        self.progress.console.print(f"[bold]{target.variant}[/] -> {profile_path}", highlight=False)

    def message(self, text: str) -> None:
        self.progress.console.print(f"  {self._variant}: {text}", highlight=False)

    def point_started(self, label: str, total: int | None) -> None:
        with self._lock:
            self._failed = 0
            self._task = self.progress.add_task(f"{self._variant} {label}", total=total)

    def request_done(self, result) -> None:
        if self._task is None:
            return
        if not result.success:
            self._failed += 1
            self.progress.update(self._task, description=f"{self._variant} [red]{self._failed} failed[/]")
        self.progress.advance(self._task)

    def point_done(self, point) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=point.completed + point.failed)
            self.progress.stop_task(self._task)
        ttft = getattr(point, "median_ttft_ms", None)
        status = " [yellow](incomplete)[/]" if point.incomplete else ""
        if getattr(point, "input_tokens_mismatch", False):
            status += " [yellow](prompt tokens off)[/]"
        self.progress.console.print(
            f"  {self._variant} {point.label}: {point.request_throughput:.2f} req/s, "
            f"{point.output_throughput:.1f} tok/s, TTFT p50 {_ms(ttft)}, failed {point.failed}{status}",
            highlight=False,
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _rate(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(profile) -> Table:
    table = Table(
        title=f"{profile.variant} on {profile.device.name}",
        caption=f"measured: run {profile.run_id} ({'complete' if profile.complete else 'INCOMPLETE'}); "
        "latencies client-side, cache/KV from the server's /metrics",
    )
    for header in ("point", "ok/failed", "req/s", "out tok/s", "TTFT p50", "TTFT p95", "TPOT p50", "E2EL p50",
                   "img tok share", "mm hit", "KV max", "SLO"):
        table.add_column(header, justify="right" if header != "point" else "left")
    for p in profile.points:
        get = lambda key, p=p: getattr(p, key, None)  # noqa: E731 - percentile fields are extra keys
        slo = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[p.meets_slo]
        table.add_row(
            p.label + (" (incomplete)" if p.incomplete else "") + (" (tokens off)" if p.input_tokens_mismatch else ""),
            f"{p.completed}/{p.failed}",
            _rate(p.request_throughput), _rate(p.output_throughput, 1), _ms(get("median_ttft_ms")),
            _ms(get("p95_ttft_ms")), _ms(get("median_tpot_ms")), _ms(get("median_e2el_ms")),
            _rate(p.image_token_share), _rate(p.mm_cache_hit_rate), _rate(p.max_kv_cache_usage_perc), slo,
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command(
        "benchmark",
        help="Serve each variant with vLLM and measure TTFT, TPOT, ITL, E2EL, throughput and goodput under "
        "image+text load.",
    )
    def benchmark_cmd(
        source: str | None = typer.Argument(
            None, help="variants/<model>/manifest.json, a model folder, or a hub id (org/name[@revision], from the "
            "Hugging Face cache; downloaded unless HF_HUB_OFFLINE=1)"),
        variant: list[str] | None = typer.Option(None, "--variant", help="only these variants (repeatable)"),
        endpoint: str | None = typer.Option(None, help="benchmark an external OpenAI-compatible server (URL)"),
        model: str | None = typer.Option(None, "--model", help="model name the --endpoint serves"),
        tokenizer: str | None = typer.Option(
            None, "--tokenizer", help="size prompts with this tokenizer (folder or hub id) instead of the served "
            "model's own (its folder, or the server's /tokenize); for servers without /tokenize"),
        input_tokens: int = typer.Option(
            64, min=1, help="prompt tokens per request in the served model's tokenizer, as vllm bench serve's "
            "--random-input-len (its special tokens included; chat template and image tokens on top)"),
        output_tokens: int = typer.Option(32, min=1, help="output tokens per request (forced with ignore_eos)"),
        images_per_request: int = typer.Option(1, min=0),
        image_size: str = typer.Option("56x56", help="WxH[,WxH...], cycled over image slots"),
        image_reuse: float = typer.Option(0.0, min=0.0, max=1.0, help="fraction of image slots that repeat"),
        image_style: str = typer.Option(
            "photo", help="photo (gradient, compresses like a photo) | noise (random pixels, as vllm's random-mm)"),
        dataset: Path | None = typer.Option(None, help="JSONL: {prompt, image_files, output_tokens?} per line"),
        concurrency: str | None = typer.Option(None, help="closed-loop concurrencies, e.g. 1,4,16"),
        rate: str | None = typer.Option(None, help="open-loop request rates in req/s, e.g. 1,2,4"),
        arrival: str = typer.Option("poisson", help="poisson | constant | gamma:B (with --rate)"),
        max_concurrency: int | None = typer.Option(None, min=1, help="cap in-flight requests with --rate"),
        sweep: bool = typer.Option(False, "--sweep", help="find saturation, then the highest load meeting --slo"),
        sweep_max_concurrency: int = typer.Option(64, min=1),
        slo: str | None = typer.Option(None, help="e.g. ttft_p95_ms=500,tpot_p95_ms=50"),
        num_prompts: int | None = typer.Option(None, min=1, help="requests per point (default 32)"),
        duration: float | None = typer.Option(None, min=0.1, help="seconds per point instead of --num-prompts"),
        warmup: int = typer.Option(2, min=0, help="warm-up requests (own images, never counted)"),
        out: Path = typer.Option(Path("profiles"), help="profiles go to OUT/<model>/<variant>@<dev>.json"),
        resume: bool = typer.Option(False, "--resume", help="continue a saved profile, skipping finished points"),
        seed: int = typer.Option(0),
        request_timeout: float = typer.Option(300.0, min=0.1, help="seconds per request"),
        stall_timeout: float | None = typer.Option(None, min=0.1, help="fail a stream silent this long (s)"),
        no_ignore_eos: bool = typer.Option(False, "--no-ignore-eos", help="let the model stop early"),
        max_model_len: int = typer.Option(1024, min=16),
        max_num_seqs: int | None = typer.Option(None, min=1),
        server_arg: list[str] | None = typer.Option(None, "--server-arg", help="extra vLLM argument (repeatable)"),
        startup_timeout: float = typer.Option(600.0, min=1),
        devices: str | None = typer.Option(
            None, help="run variants side by side, one per device: CUDA_VISIBLE_DEVICES values (GPU index or "
            "GPU/MIG UUID), comma-separated"),
        device_name: str | None = typer.Option(None, help="record this device name (e.g. for --endpoint)"),
        no_host_costs: bool = typer.Option(
            False, "--no-host-costs", help="skip timing the processor and tokenizer in the serve env and the "
            "text-only vs image probe (host costs for the performance model, docs/cost-model.md)"),
        metrics_interval: float = typer.Option(
            1.0, min=0.0, help="seconds between /metrics samples during a point (0: only before/after; each "
            "scrape costs the server some CPU, docs/benchmark.md)"),
    ) -> None:
        from vlmopt.bench.arrivals import LoadSpec, parse_arrival
        from vlmopt.bench.event_loop import loop_choice
        from vlmopt.bench.images import check_image_style, parse_image_sizes
        from vlmopt.bench.metrics import parse_slo
        from vlmopt.bench.runner import BenchOptions
        from vlmopt.bench.schedule import BenchmarkInterrupted, run_targets
        from vlmopt.bench.targets import endpoint_target, resolve_targets
        from vlmopt.bench.workload import load_dataset
        from vlmopt.schemas import ContractError, load_model
        from vlmopt.schemas.profile import BenchmarkProfile

        # -- validate everything before anything is started or written ---------------------------------------
        if endpoint and source:
            fail("give either a manifest/model folder or --endpoint, not both")
        if endpoint and not model:
            fail("--endpoint needs --model NAME (the model id the server serves)")
        if concurrency and rate:
            fail("--concurrency and --rate are exclusive")
        if sweep and (concurrency or rate):
            fail("--sweep chooses the loads itself; drop --concurrency/--rate")
        if num_prompts and duration:
            fail("--num-prompts and --duration are exclusive")
        if endpoint and not endpoint.startswith(("http://", "https://")):
            fail(f"--endpoint {endpoint!r} must start with http:// or https://")
        try:
            sizes = parse_image_sizes(image_size)
            slo_map = parse_slo(slo)
            kind, burstiness = parse_arrival(arrival)
            loop_choice()  # a bad VLMOPT_EVENT_LOOP is bad input too
            check_image_style(image_style, "--image-style")
        except ValueError as exc:
            fail(str(exc))
        if sweep and not slo_map:
            err_console.print("note: --sweep without --slo finds saturation only", highlight=False)
        if dataset is not None:
            try:
                load_dataset(dataset, output_tokens)
            except ContractError as exc:
                fail(str(exc))
        loads: list[LoadSpec] = []
        if rate:
            loads = [LoadSpec(kind, max_concurrency=max_concurrency, rate=r, burstiness=burstiness)
                     for r in _csv_numbers(rate, "--rate", float)]
        else:
            loads = [LoadSpec("concurrency", max_concurrency=c)
                     for c in _csv_numbers(concurrency or "1", "--concurrency", int)]
        try:
            targets = [endpoint_target(endpoint, model)] if endpoint else resolve_targets(source, variant)
        except ContractError as exc:
            fail(str(exc))
        tokenizer_ref = None
        if tokenizer:
            from vlmopt.bench.tokens import local_token_counter
            from vlmopt.hub import ModelNotFound, resolve_model

            try:
                tokenizer_ref = resolve_model(tokenizer, what="--tokenizer", files="tokenizer")
            except ModelNotFound as exc:
                fail(str(exc))
            if local_token_counter(tokenizer_ref.path) is None:
                fail(f"--tokenizer {tokenizer}: no loadable tokenizer in {tokenizer_ref.path}")
        device_list = [d.strip() for d in devices.split(",") if d.strip()] if devices else []
        if device_list and endpoint:
            fail("--devices applies to servers vlmopt starts, not to --endpoint")

        opts = BenchOptions(
            input_tokens=input_tokens, output_tokens=output_tokens, images_per_request=images_per_request,
            image_sizes=sizes, image_reuse=image_reuse, image_style=image_style, dataset=dataset, loads=loads,
            sweep=sweep, sweep_max_concurrency=sweep_max_concurrency, slo=slo_map,
            num_prompts=None if duration else (num_prompts or 32), duration_s=duration, warmup=warmup,
            seed=seed, out_dir=out, resume=resume, request_timeout_s=request_timeout,
            stall_timeout_s=stall_timeout, ignore_eos=not no_ignore_eos, max_model_len=max_model_len,
            max_num_seqs=max_num_seqs, extra_server_args=list(server_arg or []), metrics_interval_s=metrics_interval,
            startup_timeout_s=startup_timeout, device_name=device_name, host_costs=not no_host_costs,
            tokenizer=tokenizer_ref.path if tokenizer_ref else None,
            tokenizer_label=tokenizer_ref.label if tokenizer_ref else None,
        )

        # -- run ---------------------------------------------------------------------------------------------
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            try:
                results = run_targets(targets, opts, lambda target: nullcontext(RichProgress(bar)), device_list)
            except BenchmarkInterrupted as stop:
                err_console.print("[yellow]interrupted:[/] server stopped; measured points kept in "
                                  f"{', '.join(map(str, stop.results.written)) or out}", highlight=False)
                raise typer.Exit(EXIT_INTERRUPTED) from None

        for path in results.written:
            console.print(summary_table(load_model(BenchmarkProfile, path)))
            console.print(f"profile: {path}  (CSV: {path.with_suffix('.csv')})", highlight=False)
        if results.failures:
            for failure in results.failures:
                err_console.print(f"[bold red]error:[/] {failure.target.variant}: {failure.message}", highlight=False,
                                  soft_wrap=True)
            raise typer.Exit(EXIT_FAILED)
