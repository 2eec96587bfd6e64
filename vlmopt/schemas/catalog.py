"""GPU catalog (vlmopt/data/gpus.yaml) and price catalog (vlmopt/data/prices.yaml). Every number carries a source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import SCHEMA_VERSION, StrictModel

Market = Literal["on_demand", "spot"]


class MigProfileSpec(StrictModel):
    name: str = Field(description="e.g. '1g.10gb', '3g.40gb', '1g.20gb+me'")
    profile_id: int = Field(description="GPU instance profile id as in `nvidia-smi mig -lgip`")
    compute_slices: int = Field(ge=1)
    memory_slices: int = Field(ge=1)
    memory_gib: float = Field(gt=0, description="usable memory of the instance")
    starts: list[int] = Field(description="legal placement start slots (memory-slot index)")
    max_count: int = Field(ge=1)
    media_extensions: bool = False
    sms: int | None = Field(default=None, ge=1, description="SMs of the instance (`nvidia-smi mig -lgip`)")
    memory_source: str | None = Field(
        default=None, description="where memory_gib comes from when it is not the geometry's source (e.g. DERIVED)"
    )
    min_driver: str | None = Field(default=None, description="oldest driver branch that offers the profile")

    @property
    def memory_estimated(self) -> bool:
        """True when memory_gib was derived rather than read from an `nvidia-smi mig -lgip` capture."""
        return bool(self.memory_source and self.memory_source.startswith("DERIVED"))


class MigGeometry(StrictModel):
    compute_slices: int = 7
    memory_slots: int = 8
    profiles: list[MigProfileSpec]
    source: str


class GpuSpec(StrictModel):
    id: str = Field(description="catalog key, e.g. 'h100-sxm-80gb'")
    names: list[str] = Field(description="names NVML may report, e.g. 'NVIDIA H100 80GB HBM3'")
    pci_device_ids: list[str] = Field(
        default_factory=list, description="PCI device id, 4 hex digits, e.g. '0x2330' (NVML reports 0x233010DE)"
    )
    memory_gib: float = Field(gt=0, description="total memory as NVML reports it (what vLLM's utilisation scales)")
    memory_bandwidth_gbs: float = Field(gt=0, description="GB/s")
    tflops: dict[str, float] = Field(description="dense TFLOPS by dtype: bf16, fp16, fp8, int8")
    fp8: bool = False
    sms: int | None = None
    tdp_w: float | None = None
    mig: MigGeometry | None = None
    sources: list[str] = Field(min_length=1)
    display_name: str | None = Field(default=None, description="short human name, e.g. 'H100 SXM 80GB'")
    architecture: str | None = Field(default=None, description="ampere | ada | hopper | blackwell | turing")
    compute_capability: str | None = Field(default=None, description="e.g. '9.0'; FP8 W8A8 needs >= 8.9")
    form_factor: str | None = Field(default=None, description="sxm | pcie | nvl | superchip")
    notes: list[str] = Field(default_factory=list)

    @property
    def nvml_pci_device_ids(self) -> list[str]:
        """The ids as NVML's `pciInfo.pciDeviceId` and mig-parted's `device-filter` spell them: '0x233010DE'."""
        return [f"0x{int(pci, 16):04X}10DE" for pci in self.pci_device_ids]

    def dense_tflops(self, dtype: str) -> float | None:
        """Dense tensor peak for `dtype`; bf16 falls back to fp16 on GPUs without bf16 (T4), None if unknown."""
        if dtype in self.tflops:
            return self.tflops[dtype]
        if dtype == "bf16":
            return self.tflops.get("fp16")
        return None

    def mig_profile(self, name: str) -> MigProfileSpec:
        if self.mig is None:
            raise KeyError(f"{self.id} does not support MIG")
        for profile in self.mig.profiles:
            if profile.name == name:
                return profile
        raise KeyError(f"{self.id} has no MIG profile {name!r}; it has {[p.name for p in self.mig.profiles]}")


class GpuCatalog(StrictModel):
    schema_version: int = SCHEMA_VERSION
    gpus: list[GpuSpec]

    def get(self, gpu_id: str) -> GpuSpec:
        for g in self.gpus:
            if g.id == gpu_id:
                return g
        raise KeyError(f"unknown GPU {gpu_id!r}; catalog has {[g.id for g in self.gpus]}")


class PriceEntry(StrictModel):
    cloud: str
    region: str
    instance_type: str
    gpu: str = Field(description="GpuSpec.id")
    gpus_per_instance: int = Field(ge=1)
    market: Market
    usd_per_hour: float = Field(gt=0, description="per instance")
    interruption_rate_per_hour: float | None = Field(default=None, ge=0, description="spot only")
    source: str
    retrieved: str = Field(description="ISO date")

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus_per_instance


class PriceCatalog(StrictModel):
    schema_version: int = SCHEMA_VERSION
    currency: Literal["USD"] = "USD"
    prices: list[PriceEntry]
