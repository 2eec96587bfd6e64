"""Demo step: plan a bundled real VLM (Qwen2.5-VL-7B by default) on cloud GPUs from estimates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .outputs import write_plan_outputs

if TYPE_CHECKING:
    from .runner import DemoOptions, DemoUI


def plan_cloud(options: DemoOptions, out: Path, ui: DemoUI) -> tuple[Path, Path]:
    from vlmopt.plan.errors import PlanInputError
    from vlmopt.plan.inputs import load_plan_inputs
    from vlmopt.plan.planner import make_plan
    from vlmopt.schemas.common import ContractError

    from .runner import DemoStepFailed

    try:
        inputs = load_plan_inputs(workload=options.cloud_workload, mode="cloud")
        plan = make_plan(inputs.workload, inputs.profiles, inputs.manifests, inputs.gpu_catalog, inputs.price_catalog,
                         mode="cloud", workload_ref=inputs.workload_ref, prices_path=inputs.prices_path,
                         name="cloud-" + inputs.workload.name)
    except (ContractError, PlanInputError, ValueError) as exc:
        raise DemoStepFailed(str(exc)) from None
    models = ", ".join(sorted({s.model for s in inputs.workload.services}))
    ui.info(f"planned {models} ({inputs.workload_ref}) on the GPU and price catalogs: "
            f"${plan.cost.usd_per_hour:,.2f}/h (estimated capacities, catalog prices)")
    return write_plan_outputs(plan, out, inputs.gpu_catalog, inputs.profiles, inputs.manifests, ui, bundle=True)
