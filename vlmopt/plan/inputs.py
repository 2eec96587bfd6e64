"""What `make_plan` reads, as one validated object, and how `vlmopt plan` / `vlmopt demo` load it from files.

`PlanInputs` holds every cross-field rule of the planner's inputs (mode, fleet needs an inventory, cloud needs a
price catalog, the availability override, GPUs named by the workload or the price catalog exist in the GPU catalog,
a service's manifest was loaded): constructing one raises `PlanInputError` with one line naming the field, so the
CLI, the demo and library callers all get the same checks. Rules about one file alone live in its schema
(vlmopt/schemas/). `PlanningOptions` holds how to plan (not what): the planner passes it down to every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from vlmopt.paths import data_file, data_files, data_label
from vlmopt.schemas.catalog import GpuCatalog, PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.inventory import GpuInventory
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.profile import BenchmarkProfile
from vlmopt.schemas.workload import Workload

from .errors import PlanInputError
from .variants import find_manifest

BUNDLED_WORKLOAD = "default"
PlanMode = Literal["cloud", "fleet"]


@dataclass(frozen=True)
class PlanningOptions:
    """How to plan. Every planner step reads it from the planning context (`context.Context.options`); a new
    option is a field here, read where it applies."""

    attribute_levers: bool = True  # re-solve with levers switched off to say what each one saves
    # Size the plan so the SLO holds with every capacity at the low end of its error band (an estimate's measured
    # model error, a measurement's run-to-run spread; docs/cost-model.md#error-bands). The nominal plan is solved
    # too, and plan.robust records both costs.
    robust: bool = False


class PlanInputs(BaseModel):
    """Everything one plan is made from. Construct it with keywords; a broken cross-field rule raises
    PlanInputError (a ValueError) with one line naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    workload: Workload
    gpu_catalog: GpuCatalog
    price_catalog: PriceCatalog | None = None
    mode: PlanMode = "cloud"
    inventory: GpuInventory | None = None
    profiles: dict[str, BenchmarkProfile] = {}
    manifests: dict[str, VariantManifest] = {}
    availability: float | None = None  # overrides workload.constraints.availability
    name: str | None = None  # the plan's name (default: the workload's)
    workload_ref: str | None = None  # where the workload came from, as plan.json records it
    prices_path: str = "vlmopt/data/prices.yaml"  # how price provenance names the price catalog

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise PlanInputError(_one_line(exc)) from None

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, mode: object) -> object:
        if mode not in ("cloud", "fleet"):
            raise ValueError(f"mode (--mode): must be 'cloud' or 'fleet', got {mode!r}")
        return mode

    @model_validator(mode="after")
    def _cross_field_rules(self) -> PlanInputs:
        if self.mode == "cloud" and self.price_catalog is None:
            raise ValueError("prices: cloud mode needs a price catalog")
        if self.mode == "fleet" and self.inventory is None:
            raise ValueError("inventory (--inventory): fleet mode needs --inventory nvml or an inventory file")
        if self.availability is not None and not 0 < self.availability < 1:
            raise ValueError(f"availability (--availability): must be between 0 and 1 (exclusive), "
                             f"got {self.availability}")
        known = sorted(g.id for g in self.gpu_catalog.gpus)
        c = self.workload.constraints
        for field_name, ids in (("constraints.gpus", c.gpus or []), ("constraints.max_gpus", list(c.max_gpus))):
            unknown = [g for g in ids if g not in known]
            if unknown:
                raise ValueError(f"{field_name}: unknown GPU(s) {unknown}; the GPU catalog has {known}")
        for i, row in enumerate(self.price_catalog.prices if self.price_catalog else []):
            if row.gpu not in known:
                raise ValueError(f"prices[{i}].gpu: unknown GPU {row.gpu!r}; the GPU catalog has {known}")
        for i, service in enumerate(self.workload.services):
            if service.manifest is not None and find_manifest(service, self.manifests) is None:
                raise ValueError(f"services[{i}].manifest: {service.manifest} was not loaded (pass it with --manifest)")
        return self

    @property
    def availability_target(self) -> float:
        return self.availability if self.availability is not None else self.workload.constraints.availability

    @property
    def plan_name(self) -> str:
        return self.name or self.workload.name

    @property
    def source(self) -> str:
        return self.workload_ref or f"bundled:{self.workload.name}"


def _one_line(exc: ValidationError) -> str:
    """The first error, as `field: message` (a cross-field rule's message already names its field)."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(part) for part in first["loc"])
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    named = not loc or message.startswith(loc)
    return (message if named else f"{loc}: {message}") + more


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
    availability: float | None = None,
    name: str | None = None,
) -> PlanInputs:
    """Read the files and build PlanInputs. Raises ContractError / FileNotFoundError / NvmlUnavailable naming a bad
    file, PlanInputError naming a broken cross-field rule."""
    from vlmopt.hw.catalog import load_gpu_catalog

    bundled = data_files("workloads")
    if workload is None or (not workload.exists() and str(workload) in bundled):
        bundled_name = BUNDLED_WORKLOAD if workload is None else str(workload)
        workload_path = bundled.get(bundled_name, data_file(f"workloads/{bundled_name}.yaml"))
        ref = f"bundled:{bundled_name}"
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
    return PlanInputs(
        workload=loaded_workload, gpu_catalog=gpu_catalog, price_catalog=price_catalog, mode=mode,
        inventory=loaded_inventory, profiles=loaded_profiles, manifests=loaded_manifests, availability=availability,
        name=name, workload_ref=ref, prices_path=data_label(prices_path),
    )
