"""Write what a plan produces: plan.json with its deploy bundle, and the cost report. One function for
`vlmopt plan`, `vlmopt demo` and `vlmopt report`, so the three write the same files the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.emit import write_bundle
from vlmopt.report import ReportPaths, build_report
from vlmopt.schemas.catalog import GpuCatalog
from vlmopt.schemas.common import save_model
from vlmopt.schemas.deploy import DeploySettings
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.plan import Plan
from vlmopt.schemas.profile import BenchmarkProfile


class PlanOutputError(RuntimeError):
    """Writing one of the outputs failed; `target` says which ("deploy" or "report"), `path` where."""

    def __init__(self, target: str, path: Path, cause: Exception) -> None:
        super().__init__(f"{path}: {cause}")
        self.target = target
        self.path = path
        self.cause = cause


@dataclass
class PlanOutputs:
    plan_json: Path | None = None
    deploy_files: list[Path] = field(default_factory=list)  # plan.json and, with the bundle, every emitted file
    report: ReportPaths | None = None


def write_plan_outputs(
    plan: Plan,
    *,
    deploy_dir: Path | None,
    report_dir: Path | None,
    catalog: GpuCatalog | None = None,
    profiles: Sequence[BenchmarkProfile] = (),
    manifests: Sequence[VariantManifest] = (),
    bundle: bool = True,
    settings: DeploySettings | None = None,
) -> PlanOutputs:
    """Write plan.json (with the deploy bundle when `bundle`) into `deploy_dir` and the cost report into
    `report_dir`; either may be None to skip it (`vlmopt report` re-renders a report from an existing plan.json).
    `settings`: the deploy settings (the workload's `deploy:` block or `--deploy-settings`); None = defaults.
    Each folder is replaced whole or left as it was; raises PlanOutputError naming the folder that failed."""
    out = PlanOutputs()
    if deploy_dir is not None:
        try:
            if bundle:
                out.deploy_files = write_bundle(plan, deploy_dir, settings, catalog=catalog)
            else:  # e.g. a plan on this machine's CPU: no GPU deployment to emit
                out.deploy_files = [save_model(plan, deploy_dir / "plan.json")]
        except Exception as exc:
            raise PlanOutputError("deploy", deploy_dir, exc) from exc
        out.plan_json = deploy_dir / "plan.json"
    if report_dir is not None:
        try:
            out.report = build_report(plan, report_dir, profiles=list(profiles), manifests=list(manifests))
        except Exception as exc:
            raise PlanOutputError("report", report_dir, exc) from exc
    return out
