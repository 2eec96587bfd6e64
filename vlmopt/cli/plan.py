"""`vlmopt plan`: load the inputs, plan (vlmopt.plan.planner), show the plan with rich, write the bundle and report.

Every input is read and the whole plan computed before anything is written, so bad input or an infeasible
workload exits with code 2 and one line naming the field, leaving the output folders untouched.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._common import DATA_DIR_HELP, EXIT_BAD_INPUT, EXIT_FAILED, console, fail, use_data_dir


def _render(plan) -> None:
    estimated = [r for g in plan.node_groups for r in g.gpu_layout.replicas if r.capacity_provenance.kind != "measured"]
    services = Table(title=f"Plan {plan.name} ({plan.mode} mode)", title_justify="left")
    for col in ("service", "variant", "needs req/s", "provides req/s", "capacity source", "replicas",
                "availability"):
        services.add_column(col, overflow="fold")
    for s in plan.services:
        kinds = sorted({r.capacity_provenance.kind for g in plan.node_groups for r in g.gpu_layout.replicas
                        if r.service == s.service})
        services.add_row(s.service, s.variant, f"{s.required_rps:.2f}", f"{s.provided_rps:.2f}", ", ".join(kinds),
                         str(s.replicas), f"{s.availability:.6f}" if s.availability is not None else "-")
    console.print(services)
    for s in plan.services:
        console.print(f"[bold]{s.service}[/]: {s.why}", highlight=False)

    groups = Table(title="Node groups", title_justify="left")
    for col in ("group", "GPU", "where", "market", "instances x GPUs", "layout per GPU", "replicas per GPU",
                "$/h", "price source", "capacity source"):
        groups.add_column(col, overflow="fold")
    for g in plan.node_groups:
        reps = ", ".join(f"{r.service}/{r.variant}@{r.slice} {r.capacity_rps:.2f} req/s" for r in g.gpu_layout.replicas)
        sources = sorted({r.capacity_provenance.kind for r in g.gpu_layout.replicas})
        groups.add_row(g.name, g.gpu, f"{g.cloud or '-'} {g.region or ''} {g.instance_type or ''}".strip(),
                       g.market, f"{g.instances} x {g.gpus_per_instance}",
                       "+".join(g.gpu_layout.mig_layout) if g.gpu_layout.mig_layout else "whole GPU",
                       reps, f"{g.usd_per_hour:.2f}", g.price_provenance.label(), ", ".join(sources))
    console.print(groups)

    costs = Table(title="Cost", title_justify="left")
    for col in ("figure", "plan", "baseline (bf16, whole GPUs, on-demand)"):
        costs.add_column(col)
    base = plan.baseline.cost if plan.baseline else None

    def fmt(v):
        return "-" if v is None else f"${v:,.2f}"

    for label, attr in (("per hour", "usd_per_hour"), ("per month (730 h)", "usd_per_month"),
                        ("expected per hour (spot fallback)", "expected_usd_per_hour"),
                        ("worst case per hour (all spot lost)", "worst_case_usd_per_hour"),
                        ("per 1M output tokens", "usd_per_million_output_tokens"),
                        ("per 1k images", "usd_per_thousand_images")):
        costs.add_row(label, fmt(getattr(plan.cost, attr)), fmt(getattr(base, attr) if base else None))
    console.print(costs)
    if plan.levers:
        levers = Table(title="Savings by lever (switched on in this order)", title_justify="left")
        for col in ("lever", "$/h saved", "how"):
            levers.add_column(col, overflow="fold")
        for lv in plan.levers:
            levers.add_row(lv.name, f"{lv.usd_per_hour_saved:.2f}", lv.explanation)
        console.print(levers)
    if plan.robust is not None:
        r = plan.robust
        console.print(f"[bold]robust:[/] ${r.usd_per_hour:,.2f}/h with every capacity at the low end of its band "
                      f"({r.robust_gpus} GPUs); the nominal plan costs ${r.nominal_usd_per_hour:,.2f}/h "
                      f"({r.nominal_gpus} GPUs): robustness adds ${r.extra_usd_per_hour:,.2f}/h", highlight=False)
    console.print(f"[bold]optimality:[/] {plan.solver.get('optimality', 'unknown')}", highlight=False)
    for line in plan.binding_constraints:
        console.print(f"[bold]binding:[/] {line}", highlight=False)
    if estimated:
        console.print("[yellow]Capacities and latencies marked 'estimated' come from the roofline model, not from "
                      "measurements; dollar figures come from the price catalog rows named above.[/]")
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command(
        "plan",
        help="Pick the cheapest mix of variant, GPU, MIG slice and spot/on-demand capacity that meets the SLO, and "
        "write a deploy bundle. With no arguments it plans the bundled example workload from estimates.",
    )
    def plan_cmd(
        workload: Path | None = typer.Option(
            None, "--workload", "-w", help="workload YAML, or a bundled workload's name such as multi-service "
            "(default: the bundled 'default')"),
        profiles: Path | None = typer.Option(None, "--profiles", help="folder of measured profiles (*@*.json)"),
        manifest: list[Path] = typer.Option([], "--manifest", help="variant manifest(s) from `vlmopt quantize`"),
        prices: Path | None = typer.Option(None, "--prices", help="price catalog YAML (default: bundled)"),
        gpus: Path | None = typer.Option(None, "--gpus", help="GPU catalog YAML (default: bundled)"),
        inventory: str | None = typer.Option(None, "--inventory", help="'nvml' or an inventory file (fleet mode)"),
        mode: str = typer.Option("cloud", "--mode", help="cloud (buy from the price catalog) or fleet (inventory)"),
        availability: float | None = typer.Option(None, "--availability", help="target, e.g. 0.999"),
        out: Path | None = typer.Option(None, "--out", help="deploy bundle folder (default: deploy/<workload>)"),
        report_dir: Path | None = typer.Option(None, "--report-dir", help="report folder (default: reports/<name>)"),
        name: str | None = typer.Option(None, "--name", help="plan name (default: the workload's name)"),
        deploy_settings: Path | None = typer.Option(
            None, "--deploy-settings", help="deploy settings YAML/JSON (default: the workload's `deploy:` block; "
            "docs/deploy-bundle.md#deploy-settings)"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
        robust: bool = typer.Option(
            False, "--robust", help="size the plan so the SLO holds with every capacity at the low end of its error "
            "band; the report shows the extra cost over the nominal plan (docs/plan.md#robust-plans)"),
    ) -> None:
        from vlmopt.hw.nvml import NvmlUnavailable
        from vlmopt.plan.errors import PlanInfeasible, PlanInputError
        from vlmopt.plan.inputs import PlanningOptions, load_plan_inputs
        from vlmopt.plan.planner import make_plan
        from vlmopt.plan_outputs import PlanOutputError, write_plan_outputs
        from vlmopt.schemas.common import ContractError

        use_data_dir(data_dir)
        settings = None
        if deploy_settings is not None:
            from vlmopt.schemas.common import load_model
            from vlmopt.schemas.deploy import DeploySettings

            try:
                settings = load_model(DeploySettings, deploy_settings)
            except ContractError as exc:
                fail(f"--deploy-settings: {exc}")
        try:
            inputs = load_plan_inputs(workload, profiles, manifest, prices, gpus, inventory, mode, availability, name)
            plan = make_plan(inputs, PlanningOptions(robust=robust))
        except PlanInfeasible as exc:
            fail(f"infeasible: {exc}")
        except (ContractError, PlanInputError, FileNotFoundError, ValueError, NvmlUnavailable) as exc:
            fail(str(exc))

        out_dir = out or Path("deploy") / plan.name
        report_out = report_dir or Path("reports") / plan.name
        try:
            written = write_plan_outputs(plan, deploy_dir=out_dir, report_dir=report_out, catalog=inputs.gpu_catalog,
                                         profiles=list(inputs.profiles.values()),
                                         manifests=list(inputs.manifests.values()),
                                         settings=settings if settings is not None else inputs.workload.deploy)
        except PlanOutputError as exc:
            from vlmopt.emit import EmitError

            # A plan/settings combination the bundle cannot serve is bad input; anything else is a failure.
            code = EXIT_BAD_INPUT if isinstance(exc.cause, EmitError) else EXIT_FAILED
            fail(f"{'--out' if exc.target == 'deploy' else '--report-dir'} {exc}", code=code)
        _render(plan)
        console.print(f"wrote {len(written.deploy_files)} files to {out_dir}/ (plan.json and the deploy bundle)")
        assert written.report is not None
        console.print(f"wrote the cost report to {written.report.markdown}")
