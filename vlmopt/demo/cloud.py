"""Demo step: plan a bundled real VLM (Qwen2.5-VL-7B by default) on cloud GPUs from estimates."""

from __future__ import annotations

from pathlib import Path

from .common import DemoOptions, DemoStepFailed, DemoUI
from .outputs import write_demo_plan


def plan_cloud(options: DemoOptions, out: Path, ui: DemoUI) -> tuple[Path, Path]:
    from vlmopt.plan.errors import PlanInputError
    from vlmopt.plan.inputs import load_plan_inputs
    from vlmopt.plan.planner import make_plan
    from vlmopt.schemas.common import ContractError

    try:
        inputs = load_plan_inputs(workload=options.cloud_workload, mode="cloud")
        inputs = inputs.model_copy(update={"name": "cloud-" + inputs.workload.name})
        plan = make_plan(inputs)
    except (ContractError, PlanInputError, ValueError) as exc:
        raise DemoStepFailed(str(exc)) from None
    models = ", ".join(sorted({s.model for s in inputs.workload.services}))
    ui.info(f"planned {models} ({inputs.workload_ref}) on the GPU and price catalogs: "
            f"${plan.cost.usd_per_hour:,.2f}/h (estimated capacities, catalog prices)")
    return write_demo_plan(plan, inputs, out, ui, bundle=True)
