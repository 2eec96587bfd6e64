"""`vlmopt report deploy/NAME`: regenerate the cost report from plan.json, profiles and manifests."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlmopt.plan_outputs import PlanOutputError, write_plan_outputs
from vlmopt.report import ReportFolderError
from vlmopt.report.formatting import usd
from vlmopt.report.inputs import (
    discover_manifests,
    discover_profiles,
    load_manifests,
    load_plan,
    load_profiles_dir,
    plan_file,
)
from vlmopt.schemas import ContractError

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, err_console, fail


def default_out(plan_path: Path) -> Path:
    """deploy/NAME -> reports/NAME (relative to the current folder, like deploy/)."""
    folder = plan_path if plan_path.is_dir() else plan_path.parent
    return Path("reports") / folder.resolve().name


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        plan_dir: Path = typer.Argument(
            ..., help="Plan folder written by `vlmopt plan` (deploy/NAME), or its plan.json."),
        profiles: Path | None = typer.Option(
            None, "--profiles", metavar="DIR",
            help="Folder of benchmark profiles (*.json) for the latency curves. "
                 "Default: the profiles plan.json names as measured inputs."),
        manifest: list[Path] | None = typer.Option(
            None, "--manifest", metavar="FILE",
            help="Variant manifest for the quality section; repeatable. Default: the manifests the profiles name."),
        out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Report folder. Default: reports/NAME."),
    ) -> None:
        """Regenerate the cost report (markdown + self-contained HTML with plots, CSV tables) from a plan folder."""
        bases = [Path.cwd(), plan_file(plan_dir).parent]
        try:
            plan = load_plan(plan_dir)
            notes: list[str] = []
            if profiles is not None:
                loaded_profiles = load_profiles_dir(profiles)
            else:
                found = discover_profiles(plan, bases)
                loaded_profiles, notes = found.profiles, notes + found.unreadable
            if manifest:
                loaded_manifests = load_manifests(manifest)
            else:
                found = discover_manifests(loaded_profiles, bases)
                loaded_manifests, notes = found.manifests, notes + found.unreadable
            target = out or default_out(plan_dir)
            written = write_plan_outputs(plan, deploy_dir=None, report_dir=target, profiles=loaded_profiles,
                                         manifests=loaded_manifests)
        except ContractError as exc:
            fail(str(exc))
        except PlanOutputError as exc:
            # a folder holding something other than a report is bad input; anything else failed while writing
            fail(str(exc.cause) if isinstance(exc.cause, ReportFolderError) else str(exc),
                 code=EXIT_BAD_INPUT if isinstance(exc.cause, ReportFolderError) else EXIT_FAILED)
        assert written.report is not None
        paths = written.report
        for note in notes:
            err_console.print(f"[yellow]note:[/] skipped a referenced input: {note}", highlight=False)

        summary = Table(title=f"Plan {plan.name}", show_header=True)
        summary.add_column("figure")
        summary.add_column("this plan", justify="right")
        summary.add_column("baseline", justify="right")
        base = plan.baseline.cost if plan.baseline else None
        for label, key in (("$ per hour", "usd_per_hour"), ("$ per month", "usd_per_month"),
                           ("$ per 1M output tokens", "usd_per_million_output_tokens"),
                           ("$ per 1k images", "usd_per_thousand_images")):
            summary.add_row(label, usd(getattr(plan.cost, key)), usd(getattr(base, key)) if base else "n/a")
        console.print(summary)
        console.print(f"profiles: {len(loaded_profiles)}, manifests: {len(loaded_manifests)}, "
                      f"plots: {len(paths.plots)}, tables: {len(paths.csv)} CSV")
        shown = paths.html.relative_to(Path.cwd()) if paths.html.is_relative_to(Path.cwd()) else paths.html
        console.print(f"report written to [bold]{shown}[/] (and {paths.markdown.name} beside it)")
