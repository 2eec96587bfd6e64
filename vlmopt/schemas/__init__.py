"""Pydantic models of every file that crosses a stage boundary. One package, one module per contract."""

from .catalog import GpuCatalog, GpuSpec, Market, MigGeometry, MigProfileSpec, PriceCatalog, PriceEntry
from .common import (
    SCHEMA_VERSION,
    ContractError,
    HubReference,
    Provenance,
    StrictModel,
    atomic_write_text,
    load_model,
    save_model,
    utc_now_iso,
)
from .inventory import GpuInventory, InventoryGpu, MigInstance, MigProfileAvailability
from .manifest import Calibration, Fidelity, QuantMethod, QuantScheme, RejectedVariant, Variant, VariantManifest
from .plan import (
    Baseline,
    Candidate,
    CostSummary,
    GpuAssignment,
    HostSizing,
    Lever,
    NodeGroup,
    Plan,
    Replica,
    ServicePlan,
)
from .profile import (
    BenchmarkProfile,
    CapacitySummary,
    ClientInfo,
    DeviceInfo,
    EngineInfo,
    LoadPoint,
    ServerArgs,
    WorkloadSpec,
)
from .workload import Constraints, QualityFloor, Service, Slo, Workload

__all__ = [
    "SCHEMA_VERSION", "Baseline", "BenchmarkProfile", "Calibration", "Candidate", "CapacitySummary", "ClientInfo",
    "Constraints", "ContractError", "CostSummary", "DeviceInfo", "EngineInfo", "Fidelity", "GpuAssignment",
    "GpuCatalog", "GpuInventory", "GpuSpec", "HostSizing", "HubReference", "InventoryGpu", "Lever", "LoadPoint",
    "Market", "MigGeometry", "MigInstance", "MigProfileAvailability", "MigProfileSpec", "NodeGroup", "Plan",
    "PriceCatalog", "PriceEntry",
    "Provenance", "QualityFloor", "QuantMethod", "QuantScheme", "RejectedVariant", "Replica", "ServerArgs", "Service",
    "ServicePlan", "Slo", "StrictModel", "Variant", "VariantManifest", "Workload", "WorkloadSpec",
    "atomic_write_text", "load_model", "save_model", "utc_now_iso",
]
