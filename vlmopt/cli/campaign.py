"""`vlmopt benchmark campaign` and `vlmopt benchmark collect`, and the `benchmark` group that still runs
`vlmopt benchmark MANIFEST ...` exactly as before (docs/benchmark.md#campaigns).

The campaign takes the benchmark options after `--` and checks them with the benchmark command's own parser, so
every job runs the command line a user would run locally.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import typer
from rich.table import Table
from typer.core import TyperGroup

from . import benchmark
from ._common import DATA_DIR_HELP, EXIT_FAILED, console, err_console, fail, use_data_dir

BENCHMARK = "benchmark"
SUBCOMMANDS_NOTE = ("Cluster scale: `vlmopt benchmark campaign MANIFEST --target GPU[:SLICE] --results ... -- "
                    "<benchmark options>` writes (and with --submit runs) one Kubernetes or SkyPilot job per "
                    "variant x GPU x MIG slice; `vlmopt benchmark collect CAMPAIGN_DIR` brings the profiles home.")


class BenchmarkGroup(TyperGroup):
    """`campaign` and `collect` are subcommands; anything else is the plain `vlmopt benchmark` command line."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands or args[0] == BENCHMARK:
            args = [BENCHMARK, *args]
        return super().parse_args(ctx, args)


def _bench_settings(ctx: typer.Context, extra: list[str]):
    """The benchmark options as the benchmark command parses and checks them; exit 2 on anything it would refuse
    or that the campaign sets itself."""
    from vlmopt.bench.arrivals import parse_arrival
    from vlmopt.bench.images import check_image_style, parse_image_sizes
    from vlmopt.bench.metrics import parse_slo
    from vlmopt.campaign.command import OWNED_OPTIONS, BenchmarkSettings

    for token in extra:
        name = token.split("=", 1)[0]
        if name in OWNED_OPTIONS:
            fail(f"benchmark option {name}: set by the campaign ({OWNED_OPTIONS[name]})")
        if name in ("--help", "-h"):
            fail("benchmark options after `--` are the ones `vlmopt benchmark --help` lists")
    group = ctx.parent.command if ctx.parent is not None else None
    bench_cmd = getattr(group, "commands", {}).get(BENCHMARK)
    if bench_cmd is None:  # pragma: no cover - registered together below
        fail("the benchmark command is not registered")
    try:
        params = bench_cmd.make_context(BENCHMARK, ["placeholder-manifest", *extra]).params
    except typer.TyperException as exc:  # typer's click: UsageError, BadParameter, NoSuchOption
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        fail(f"benchmark options: {message}")
    except typer.Exit:
        fail("benchmark options: not a benchmark run")
    if params["concurrency"] and params["rate"]:
        fail("--concurrency and --rate are exclusive")
    if params["sweep"] and (params["concurrency"] or params["rate"]):
        fail("--sweep chooses the loads itself; drop --concurrency/--rate")
    if params["num_prompts"] and params["duration"]:
        fail("--num-prompts and --duration are exclusive")
    try:
        parse_image_sizes(params["image_size"])
        slo = parse_slo(params["slo"])
        parse_arrival(params["arrival"])
        check_image_style(params["image_style"], "--image-style")
    except ValueError as exc:
        fail(str(exc))
    rates = benchmark._csv_numbers(params["rate"], "--rate", float) if params["rate"] else []
    concurrency = ([] if rates or params["sweep"]
                   else benchmark._csv_numbers(params["concurrency"] or "1", "--concurrency", int))
    return BenchmarkSettings(
        args=list(extra), concurrency=concurrency, rates=rates, sweep=params["sweep"],
        sweep_max_concurrency=params["sweep_max_concurrency"],
        num_prompts=None if params["duration"] else (params["num_prompts"] or 32), duration_s=params["duration"],
        warmup=params["warmup"], output_tokens=params["output_tokens"], slo=slo,
        request_timeout_s=params["request_timeout"], startup_timeout_s=params["startup_timeout"])


def cost_table(record) -> Table:
    table = Table(title=f"Campaign {record.name}: expected cost before it runs", title_justify="left")
    show_why = record.from_plan is not None
    columns = ["variant @ target", "market", "points x s", "GPU-h", "$", *(["why"] if show_why else [])]
    for col in columns:
        table.add_column(col, overflow="fold")
    for job in record.jobs:
        e = job.estimate
        share = "" if e.gpu_share == 1 else f" ({e.gpu_share:.2f} GPU)"
        table.add_row(f"{job.variant} @ {job.target.label}{share}", job.target.market.replace("_", "-"),
                      f"{e.points} x {e.point_s:.0f}", f"{e.gpu_hours:.3f}", "-" if e.usd is None else f"{e.usd:.2f}",
                      *([job.target.why] if show_why else []))
    return table


def print_cost(record) -> None:
    console.print(cost_table(record))
    usd = "no catalog price for every job" if record.expected_usd is None else f"${record.expected_usd:,.2f}"
    console.print(f"[bold]expected:[/] {record.expected_gpu_hours:.3f} GPU-hours, {usd} "
                  "(startup + points x seconds per point, per job)", highlight=False)
    seen: set[str] = set()
    for job in record.jobs:
        e = job.estimate
        for what, prov in (("startup", e.startup_provenance), ("duration", e.duration_provenance),
                           ("price", e.price_provenance)):
            if prov is None:
                continue
            line = f"  {what}: {prov.label()}"
            if line not in seen:
                seen.add(line)
                console.print(line, highlight=False, soft_wrap=True)


def _render_collect(report) -> None:
    record = report.record
    table = Table(title=f"Campaign {record.name}: results", title_justify="left")
    for col in ("variant @ target", "outcome", "runs", "GPU-h", "profile, or why none"):
        table.add_column(col, overflow="fold")
    colour = {"complete": "green", "running": "cyan", "pending": "cyan", "incomplete": "yellow"}
    for r in report.jobs:
        job = r.job
        hours = [run.gpu_hours for run in job.runs if run.gpu_hours is not None]
        why = job.profile if job.outcome == "complete" else job.message or ""
        table.add_row(f"{job.variant} @ {job.target.label}", f"[{colour.get(job.outcome, 'red')}]{job.outcome}[/]",
                      str(len(job.runs)), f"{sum(hours):.3f}" if hours else "-", why)
    console.print(table)
    for r in report.jobs:
        if r.lines:
            console.print(f"[bold]{r.job.name}[/] ({r.job.outcome}): {r.job.message}; last {len(r.lines)} log lines",
                          highlight=False, soft_wrap=True)
            for line in r.lines:
                console.print(f"  | {line}", highlight=False, markup=False, soft_wrap=True)
    actual = "-" if record.actual_gpu_hours is None else f"{record.actual_gpu_hours:.3f}"
    console.print(f"GPU-hours: expected {record.expected_gpu_hours:.3f}, actual {actual} "
                  "(from the engines' start/end times, each run's source in campaign.json)", highlight=False)
    startups = [j.measured_startup_s for j in record.jobs if j.measured_startup_s is not None]
    if startups:
        low, high = min(startups) / 60, max(startups) / 60
        span = f"{low:.1f}" if round(low, 1) == round(high, 1) else f"{low:.1f}-{high:.1f}"
        console.print(f"measured startup (container start to first point, {len(startups)} job(s)): {span} min, plus "
                      "the image pull and weight download before it; use it for --startup-minutes next time",
                      highlight=False)
    for note in report.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)


def _engines(record, kube_context, kubeconfig, sky_python, check_results=True):
    from vlmopt.campaign.engine import EngineError
    from vlmopt.campaign.submit import connect

    try:
        return connect(record, list(kube_context or []), kubeconfig, sky_python, check_results)
    except EngineError as exc:
        fail(str(exc))


def _results_folder(folder: Path, record, source: Path | None, download: bool) -> Path:
    from vlmopt.campaign.build import RESULTS_DIR
    from vlmopt.campaign.collect import copy_results, download_results
    from vlmopt.campaign.engine import EngineError
    from vlmopt.schemas.common import ContractError

    try:
        if source is not None:
            return copy_results(source, folder, record)
        if record.results.kind != "pvc" and download:
            return download_results(record, folder)
    except (EngineError, ContractError) as exc:
        fail(str(exc))
    return folder / RESULTS_DIR


def register(app: typer.Typer) -> None:
    group = typer.Typer(cls=BenchmarkGroup, no_args_is_help=False, add_completion=False,
                        help="Serve each variant with vLLM and measure TTFT, TPOT, ITL, E2EL, throughput and goodput "
                        "under image+text load; `benchmark campaign` / `benchmark collect` run it on a cluster.")
    benchmark.register(group)
    for info in group.registered_commands:
        if info.name == BENCHMARK:
            info.epilog = SUBCOMMANDS_NOTE

    @group.command(
        "campaign",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Write one Kubernetes Job or SkyPilot managed job per variant x GPU x MIG slice, each running the same "
        "`vlmopt benchmark` command (options after `--`); --submit runs them. Prints the expected GPU-hours and "
        "dollars first.",
    )
    def campaign_cmd(
        ctx: typer.Context,
        manifest: Path | None = typer.Argument(None, help="variants/<model>/manifest.json"),
        target: list[str] | None = typer.Option(None, "--target", help="GPU[:SLICE] from the GPU catalog, e.g. "
                                                "h100-sxm-80gb:3g.40gb (repeatable, or comma-separated)"),
        from_plan: Path | None = typer.Option(None, "--from-plan", help="plan.json: benchmark the options whose "
                                              "estimated capacity decides the plan"),
        within: float = typer.Option(10.0, "--within", min=0.0, help="with --from-plan: runner-up options within "
                                     "this percent of the chosen option's $/req/s"),
        variant: list[str] | None = typer.Option(None, "--variant", help="only these variants (repeatable)"),
        engine: str = typer.Option("kubernetes", "--engine", help="kubernetes | skypilot"),
        results: str | None = typer.Option(None, "--results", help="where jobs leave their profiles: pvc:CLAIM "
                                           "(Kubernetes), s3://bucket/prefix or gs://bucket/prefix"),
        name: str | None = typer.Option(None, "--name", help="campaign name (default: <model>-<UTC date-time>)"),
        out: Path | None = typer.Option(None, "--out", help="campaign folder (default: campaigns/<name>)"),
        market: str = typer.Option("on_demand", "--market", help="on_demand | spot"),
        cloud: str | None = typer.Option(None, "--cloud", help="aws | gcp: node pools and prices for that cloud "
                                         "(default: an existing cluster's nodes)"),
        region: str | None = typer.Option(None, "--region"),
        deploy_settings: Path | None = typer.Option(None, "--deploy-settings", help="deploy settings YAML/JSON "
                                                    "(image, namespace, secrets, storage; docs/deploy-bundle.md)"),
        image: str | None = typer.Option(None, "--image", help="vLLM image (default: the deploy settings' image)"),
        namespace: str | None = typer.Option(None, "--namespace"),
        vlmopt_install: str | None = typer.Option(
            None, "--vlmopt-install", help="pip requirement the job installs into the image (default "
            "vlmopt==<this version>; a wheel URL works too), or 'preinstalled' for an image that has vlmopt"),
        serve_python: str | None = typer.Option(None, "--serve-python", help="the image's python that has vLLM "
                                                "(default /usr/bin/python3, as in the vLLM image)"),
        startup_minutes: float | None = typer.Option(None, "--startup-minutes", min=0.0,
                                                     help="per job, for the estimate (default: assumed 10)"),
        point_seconds: float | None = typer.Option(None, "--point-seconds", min=0.1,
                                                   help="per load point, for the estimate (default: from the SLO)"),
        submit: bool = typer.Option(False, "--submit", help="apply the jobs now (kubernetes client / SkyPilot)"),
        resume: Path | None = typer.Option(None, "--resume", help="an existing campaign folder: collect, then "
                                           "(with --submit) run only the jobs without a complete profile"),
        kube_context: list[str] | None = typer.Option(None, "--kube-context", help="[CLUSTER=]CONTEXT per cluster "
                                                      "folder (default: the current context)"),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig"),
        sky_python: str | None = typer.Option(None, "--sky-python", help="python of SkyPilot's environment"),
        prices: Path | None = typer.Option(None, "--prices", help="price catalog YAML (default: bundled)"),
        gpus: Path | None = typer.Option(None, "--gpus", help="GPU catalog YAML (default: bundled)"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        from vlmopt.campaign import build
        from vlmopt.campaign.engine import EngineError
        from vlmopt.campaign.submit import resubmittable
        from vlmopt.campaign.submit import submit as submit_jobs
        from vlmopt.schemas.common import ContractError

        use_data_dir(data_dir)
        extra = list(ctx.args)
        if resume is not None:
            if manifest is not None or target or from_plan or extra:
                fail("--resume takes the campaign as it was written; give no manifest, targets or options")
            try:
                record = build.load_campaign(resume)
            except ContractError as exc:
                fail(f"--resume {resume}: {exc}")
            if not submit:
                chosen, notes = resubmittable(record)
                for note in notes:
                    console.print(note, highlight=False)
                console.print(f"would submit {len(chosen)} job(s): {', '.join(j.name for j in chosen) or 'none'} "
                              "(add --submit)", highlight=False)
                return
            engines = _engines(record, kube_context, kubeconfig, sky_python)
            if any(job.runs for job in record.jobs):  # what ran before decides what runs again
                from vlmopt.campaign.collect import collect

                collect(resume, record, _results_folder(resume, record, None, True), engines)
            chosen, notes = resubmittable(record)
            for note in notes:
                console.print(note, highlight=False)
            _submit_and_save(resume, record, engines, chosen, submit_jobs, build)
            return

        if manifest is None:
            fail("give the variant manifest: vlmopt benchmark campaign variants/<model>/manifest.json ...")
        if engine not in ("kubernetes", "skypilot"):
            fail(f"--engine: kubernetes or skypilot, got {engine!r}")
        if market not in ("on_demand", "spot"):
            fail(f"--market: on_demand or spot, got {market!r}")
        if cloud is not None and cloud not in ("aws", "gcp"):
            fail(f"--cloud: aws or gcp (node pools are emitted for those), got {cloud!r}")
        if results is None:
            fail("--results: where the jobs leave their profiles (pvc:CLAIM, s3://bucket/prefix, gs://bucket/prefix)")
        if not manifest.is_file():
            fail(f"{manifest}: variant manifest not found")
        bench = _bench_settings(ctx, extra)
        request = _request(manifest, target, from_plan, within, variant, engine, results, name, out, market, cloud,
                           region, deploy_settings, image, namespace, vlmopt_install, serve_python, startup_minutes,
                           point_seconds, prices, gpus, bench)
        try:
            campaign = build.plan_campaign(request)
        except ContractError as exc:
            fail(str(exc))
        except Exception as exc:
            from vlmopt.emit import EmitError

            if isinstance(exc, EmitError):
                fail(str(exc))
            raise
        engines = _engines(campaign.manifest, kube_context, kubeconfig, sky_python) if submit else None
        print_cost(campaign.manifest)
        for note in campaign.notes:
            err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
        try:
            folder = build.write_campaign(campaign, request.out_dir)
        except ContractError as exc:
            fail(str(exc))
        console.print(f"wrote {len(campaign.files) + 1} files to {request.out_dir}/ (campaign.json, README.md, "
                      f"{'clusters/' if engine == 'kubernetes' else 'skypilot/'})", highlight=False)
        if engines is None:
            console.print(f"not submitted: `vlmopt benchmark campaign --resume {request.out_dir} --submit`, or "
                          "apply the files yourself (README.md)", highlight=False)
            return
        try:
            record = build.load_campaign(folder)
        except (ContractError, EngineError) as exc:  # pragma: no cover - just written
            fail(str(exc))
        _submit_and_save(folder, record, engines, list(record.jobs), submit_jobs, build)

    @group.command(
        "collect",
        help="Bring a campaign's profiles home (the bucket through its CLI, or --from a local copy of the PVC), "
        "validate them, put them in CAMPAIGN_DIR/profiles for `vlmopt plan --profiles`, and report every job "
        "without one, with its log tail and the GPU-hours it used.",
    )
    def collect_cmd(
        folder: Path = typer.Argument(..., help="the campaign folder (campaign.json)"),
        source: Path | None = typer.Option(None, "--from", help="a local copy of the campaign's results folder "
                                           "(kubectl cp from the PVC, a mount, a bucket copy)"),
        download: bool = typer.Option(True, "--download/--no-download", help="bucket results: sync them first"),
        engine_state: bool = typer.Option(True, "--engine/--no-engine", help="ask Kubernetes/SkyPilot for each "
                                          "submitted job's state, times and logs"),
        kube_context: list[str] | None = typer.Option(None, "--kube-context"),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig"),
        sky_python: str | None = typer.Option(None, "--sky-python"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP + "; profiles are matched to "
                                             "the GPU catalog there"),
    ) -> None:
        from vlmopt.campaign import build
        from vlmopt.campaign.collect import collect
        from vlmopt.schemas.common import ContractError

        use_data_dir(data_dir)
        try:
            record = build.load_campaign(folder)
        except ContractError as exc:
            fail(str(exc))
        submitted = any(j.runs for j in record.jobs)
        engines = (_engines(record, kube_context, kubeconfig, sky_python, check_results=False)
                   if engine_state and submitted else None)
        results_dir = _results_folder(folder, record, source, download)
        report = collect(folder, record, results_dir, engines)
        _render_collect(report)
        if report.complete:
            console.print(f"all {len(record.jobs)} profiles in {folder}/profiles: vlmopt plan --profiles "
                          f"{folder}/profiles ...", highlight=False)
            return
        missing = [r.job.name for r in report.jobs if r.job.outcome in ("missing", "failed", "incomplete")]
        if missing:
            console.print(f"{len(missing)} job(s) without a complete profile: vlmopt benchmark campaign --resume "
                          f"{folder} --submit runs only those (each resumes its saved points)", highlight=False)
        raise typer.Exit(EXIT_FAILED)

    app.add_typer(group, name=BENCHMARK)


def _request(manifest, target, from_plan, within, variant, engine, results, name, out, market, cloud, region,
             deploy_settings, image, namespace, vlmopt_install, serve_python, startup_minutes, point_seconds, prices,
             gpus, bench):
    from vlmopt.campaign.build import CampaignRequest
    from vlmopt.campaign.command import IMAGE_PYTHON, default_install
    from vlmopt.emit._common import k8s_name
    from vlmopt.hw.catalog import load_gpu_catalog
    from vlmopt.paths import data_file, data_label
    from vlmopt.schemas.catalog import PriceCatalog
    from vlmopt.schemas.common import ContractError, load_model
    from vlmopt.schemas.deploy import DeploySettings
    from vlmopt.schemas.manifest import VariantManifest

    try:
        settings = load_model(DeploySettings, deploy_settings) if deploy_settings else DeploySettings()
        updates = {k: v for k, v in (("image", image), ("namespace", namespace)) if v}
        if updates:
            settings = DeploySettings.model_validate({**settings.model_dump(), **updates})
        catalog = load_gpu_catalog(gpus)
        prices_path = prices or data_file("prices.yaml")
        price_catalog = load_model(PriceCatalog, prices_path)
        base = load_model(VariantManifest, manifest).base_model
    except (ContractError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    if name is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
        name = k8s_name(Path(base).name, stamp, max_len=40)
    specs = [s.strip() for t in (target or []) for s in t.split(",") if s.strip()]
    return CampaignRequest(
        name=name, manifest_path=Path(os.path.abspath(manifest)), out_dir=out or Path("campaigns") / name,
        engine=engine,
        results=results, bench=bench, gpu_catalog=catalog, prices=price_catalog, prices_label=data_label(prices_path),
        targets=specs, from_plan=from_plan, within_percent=within, variants=list(variant or []) or None,
        market=market, cloud=cloud, region=region, settings=settings, install=vlmopt_install or default_install(),
        serve_python=serve_python or IMAGE_PYTHON, startup_minutes=startup_minutes, point_seconds=point_seconds)


def _submit_and_save(folder, record, engines, jobs, submit_jobs, build) -> None:
    if not jobs:
        console.print("nothing to submit", highlight=False)
        return
    problems = submit_jobs(record, folder, engines, jobs)
    build.save_campaign(record, folder)
    done = [j for j in jobs if j.runs and not any(p.startswith(f"{j.name}:") for p in problems)]
    for job in done:
        run = job.runs[-1]
        console.print(f"submitted {job.name} as {run.object_name}" + (f" ({run.engine_id})" if run.engine_id else ""),
                      highlight=False)
    for line in problems:
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"then: vlmopt benchmark collect {folder}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)
