"""Write a plan's files the way `vlmopt plan` does: plan.json (+ deploy bundle) and the cost report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlmopt.schemas import BenchmarkProfile, GpuCatalog, Plan, VariantManifest

    from .runner import DemoUI


def write_plan_outputs(plan: Plan, out: Path, catalog: GpuCatalog, profiles: Mapping[str, BenchmarkProfile],
                       manifests: Mapping[str, VariantManifest], ui: DemoUI, bundle: bool) -> tuple[Path, Path]:
    from vlmopt.emit import write_bundle
    from vlmopt.report import build_report
    from vlmopt.schemas.common import save_model

    deploy_dir = out / "deploy" / plan.name
    if bundle:
        written = write_bundle(plan, deploy_dir, catalog=catalog)
        ui.info(f"deploy bundle: {len(written)} files in {deploy_dir}")
    else:
        save_model(plan, deploy_dir / "plan.json")
    report = build_report(plan, out / "reports" / plan.name, profiles=list(profiles.values()),
                          manifests=list(manifests.values()))
    html = Path(getattr(report, "html", out / "reports" / plan.name / "report.html"))
    ui.info(f"cost report: {html}")
    return deploy_dir / "plan.json", html
