"""Load everything `vlmopt plan` reads (workload, profiles, manifests, catalogs, inventory), validated, no writes.

Shared by the `plan` command and `vlmopt demo`, so both read inputs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmopt.paths import data_file, data_files, data_label
from vlmopt.schemas.catalog import GpuCatalog, PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.inventory import GpuInventory
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.profile import BenchmarkProfile
from vlmopt.schemas.workload import Workload

BUNDLED_WORKLOAD = "default"


@dataclass
class PlanInputs:
    workload: Workload
    workload_ref: str
    profiles: dict[str, BenchmarkProfile]
    manifests: dict[str, VariantManifest]
    gpu_catalog: GpuCatalog
    price_catalog: PriceCatalog
    prices_path: str
    inventory: GpuInventory | None


def normalised_profile(profile: BenchmarkProfile) -> BenchmarkProfile:
    """The device matched to the GPU catalog as the benchmark would match it today: a MIG device name as NVML
    reports it inside a pod ("NVIDIA H100 80GB HBM3 MIG 3g.40gb") counts for that slice, not for the whole GPU."""
    from vlmopt.bench.device import with_catalog_id

    device = with_catalog_id(profile.device)
    return profile if device == profile.device else profile.model_copy(update={"device": device})


def profile_source(path: Path, profile: BenchmarkProfile) -> str:
    """How plans and reports name a measured profile: its path, plus the campaign job and run that measured it
    (docs/benchmark.md#campaigns), so every measured capacity says which job it came from."""
    if not profile.campaign_job:
        return str(path)
    run = f", run {profile.run_id}" if profile.run_id else ""
    return f"{path} (job {profile.campaign_job}{run})"


def load_plan_inputs(
    workload: Path | None = None,
    profiles_dir: Path | None = None,
    manifests: list[Path] | None = None,
    prices: Path | None = None,
    gpus: Path | None = None,
    inventory: str | None = None,
    mode: str = "cloud",
) -> PlanInputs:
    """Raises ContractError / FileNotFoundError / ValueError / NvmlUnavailable naming the bad input."""
    from vlmopt.hw.catalog import load_gpu_catalog

    bundled = data_files("workloads")
    if workload is None or (not workload.exists() and str(workload) in bundled):
        name = BUNDLED_WORKLOAD if workload is None else str(workload)
        workload_path, ref = bundled.get(name, data_file(f"workloads/{name}.yaml")), f"bundled:{name}"
    else:
        workload_path, ref = workload, str(workload)
    loaded_workload = load_model(Workload, workload_path)
    # Relative manifest paths in a workload are relative to the workload file.
    for service in loaded_workload.services:
        if service.manifest and not Path(service.manifest).is_absolute():
            service.manifest = str((workload_path.parent / service.manifest).resolve())
    manifest_paths = list(manifests or []) + [Path(s.manifest) for s in loaded_workload.services if s.manifest]
    loaded_manifests = {str(p.resolve()): load_model(VariantManifest, p) for p in dict.fromkeys(manifest_paths)}
    loaded_profiles: dict[str, BenchmarkProfile] = {}
    if profiles_dir is not None:
        if not profiles_dir.is_dir():
            raise FileNotFoundError(f"--profiles {profiles_dir}: not a folder")
        for path in sorted(profiles_dir.rglob("*@*.json")):
            profile = normalised_profile(load_model(BenchmarkProfile, path))
            loaded_profiles[profile_source(path, profile)] = profile
    gpu_catalog = load_gpu_catalog(gpus)
    prices_path = prices or data_file("prices.yaml")
    price_catalog = load_model(PriceCatalog, prices_path)
    loaded_inventory = None
    if inventory is not None:
        from vlmopt.hw import nvml

        loaded_inventory = (nvml.read_inventory(gpu_catalog) if inventory == "nvml"
                            else nvml.load_inventory(inventory, gpu_catalog))
    elif mode == "fleet":
        raise ValueError("--inventory: fleet mode needs --inventory nvml or an inventory file")
    return PlanInputs(loaded_workload, ref, loaded_profiles, loaded_manifests, gpu_catalog, price_catalog,
                      data_label(prices_path), loaded_inventory)
