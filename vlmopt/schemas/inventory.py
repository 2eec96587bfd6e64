"""GPU inventory: what `vlmopt gpus --json` writes and `--inventory FILE` reads (NVML or a hand-written fleet file)."""

from __future__ import annotations

from pydantic import Field

from .common import SCHEMA_VERSION, StrictModel


class MigInstance(StrictModel):
    profile: str
    gpu_instance_id: int | None = None
    start: int | None = None
    uuid: str | None = None
    memory_gib: float | None = None


class MigProfileAvailability(StrictModel):
    name: str
    profile_id: int | None = None
    memory_gib: float | None = None
    max_count: int | None = None
    free_count: int | None = None
    placements: list[int] = Field(default_factory=list)


class InventoryGpu(StrictModel):
    index: int
    name: str
    uuid: str | None = None
    pci_device_id: str | None = None
    memory_total_gib: float
    memory_used_gib: float | None = None
    mig_capable: bool = False
    mig_mode_current: bool | None = None
    mig_mode_pending: bool | None = None
    mig_instances: list[MigInstance] = Field(default_factory=list)
    mig_profiles: list[MigProfileAvailability] = Field(default_factory=list)
    catalog_id: str | None = None
    usd_per_hour: float | None = Field(default=None, description="fleet mode: owner's cost per GPU-hour")
    architecture: str | None = None
    compute_capability: str | None = Field(default=None, description="e.g. '9.0'")
    notes: list[str] = Field(default_factory=list, description="queries NVML refused, e.g. placements need root")


class GpuInventory(StrictModel):
    schema_version: int = SCHEMA_VERSION
    source: str = Field(description="'nvml' or the inventory file path")
    host: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: list[InventoryGpu] = Field(default_factory=list)
    unavailable_reason: str | None = Field(default=None, description="why NVML could not be read (no driver, ...)")
