"""Where the demo puts a plan's files (out/deploy/NAME, out/reports/NAME), written by the shared
`vlmopt.plan_outputs.write_plan_outputs` exactly as `vlmopt plan` writes them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import DemoStepFailed, DemoUI

if TYPE_CHECKING:
    from vlmopt.plan.inputs import PlanInputs
    from vlmopt.schemas.plan import Plan


def write_demo_plan(plan: Plan, inputs: PlanInputs, out: Path, ui: DemoUI, bundle: bool) -> tuple[Path, Path]:
    """(plan.json, report.html) of `plan` under `out`; a deploy bundle too when `bundle`."""
    from vlmopt.plan_outputs import PlanOutputError, write_plan_outputs  # emit + report: loaded when a plan is written

    deploy_dir = out / "deploy" / plan.name
    try:
        written = write_plan_outputs(plan, deploy_dir=deploy_dir, report_dir=out / "reports" / plan.name,
                                     catalog=inputs.gpu_catalog, profiles=list(inputs.profiles.values()),
                                     manifests=list(inputs.manifests.values()), bundle=bundle)
    except PlanOutputError as exc:
        raise DemoStepFailed(str(exc)) from None
    if bundle:
        ui.info(f"deploy bundle: {len(written.deploy_files)} files in {deploy_dir}")
    assert written.plan_json is not None and written.report is not None
    ui.info(f"cost report: {written.report.html}")
    return written.plan_json, written.report.html
