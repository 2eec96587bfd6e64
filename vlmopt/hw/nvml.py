"""GPU inventory through NVML (nvidia-ml-py, module `pynvml`), read-only, or from an inventory file.

vlmopt never changes MIG mode or creates instances here: every call below is a query. NVML errors become
`NvmlUnavailable` with one plain line (no driver, no permission, not supported), never a traceback. Calls NVML
refuses for one GPU only (placements need root: docs/hardware.md#nvml) are noted on that GPU and skipped.
"""

from __future__ import annotations

import ctypes
import math
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

from vlmopt.hw.catalog import load_gpu_catalog, match_gpu
from vlmopt.schemas.catalog import GpuCatalog
from vlmopt.schemas.common import ContractError, load_model
from vlmopt.schemas.inventory import GpuInventory, InventoryGpu, MigInstance, MigProfileAvailability

MIB = 1024**2
GIB = 1024**3

# NVML error codes (nvml.h); read from the module when it has them, these are the fallbacks.
_ERROR_CODES = {
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
}

# GPU instance profile index (NVML_GPU_INSTANCE_PROFILE_* in nvml.h) -> suffix NVIDIA's names use
# (docs/hardware.md#mig-profile-names).
_PROFILE_SUFFIX = {0x7: "+me", 0x8: "+me", 0xA: "+gfx", 0xB: "+gfx", 0xC: "+gfx", 0xD: "-me", 0xE: "-me",
                   0xF: "+me.all", 0x10: "+me.all", 0x11: "+gfx"}


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here; the message is one line a user can act on."""


def _code(nvml: ModuleType, name: str) -> int:
    return int(getattr(nvml, name, _ERROR_CODES[name]))


def _error_value(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def describe_nvml_error(nvml: ModuleType, exc: BaseException) -> str:
    """Plain words for an NVML error, naming what to do about it."""
    value = _error_value(exc)
    if value in (_code(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND"), _code(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND")):
        return "no NVIDIA driver: the NVML library (libnvidia-ml.so) was not found"
    if value == _code(nvml, "NVML_ERROR_DRIVER_NOT_LOADED"):
        return "the NVIDIA driver is installed but not loaded"
    if value == _code(nvml, "NVML_ERROR_NO_PERMISSION"):
        return "no permission to query NVML (run as a user with access to /dev/nvidia*)"
    if value == _code(nvml, "NVML_ERROR_NOT_SUPPORTED"):
        return "NVML reports this query as not supported on this GPU or driver"
    text = str(exc).strip() or type(exc).__name__
    return f"NVML error: {text.splitlines()[0]}"


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Reader:
    """One NVML session; `optional` runs a query that may be refused and records why on the GPU."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml

    def is_code(self, exc: BaseException, *names: str) -> bool:
        return _error_value(exc) in {_code(self.nvml, name) for name in names}

    def optional(self, notes: list[str] | None, what: str, fn, *args, default=None):
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if notes is not None:
                notes.append(f"{what}: {describe_nvml_error(self.nvml, exc)}")
            return default
        except AttributeError:  # an older nvidia-ml-py without this call
            if notes is not None:
                notes.append(f"{what}: not available in this nvidia-ml-py")
            return default


def read_inventory(catalog: GpuCatalog | None = None, nvml: ModuleType | None = None) -> GpuInventory:
    """Query every GPU NVML sees. Raises NvmlUnavailable when NVML itself cannot be used."""
    nvml = nvml if nvml is not None else _import_pynvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(describe_nvml_error(nvml, exc)) from None
    try:
        if catalog is None:
            try:
                catalog = load_gpu_catalog()
            except ContractError:
                catalog = None  # matching is a convenience; a broken catalog must not hide the GPUs
        reader = _Reader(nvml)
        driver = reader.optional(None, "driver version", nvml.nvmlSystemGetDriverVersion)
        cuda = reader.optional(None, "CUDA driver version", nvml.nvmlSystemGetCudaDriverVersion)
        count = nvml.nvmlDeviceGetCount()
        gpus = [_read_gpu(reader, index, catalog) for index in range(count)]
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(describe_nvml_error(nvml, exc)) from None
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass
    return GpuInventory(
        source="nvml",
        host=socket.gethostname(),
        driver_version=_text(driver) if driver is not None else None,
        cuda_driver_version=f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None,
        gpus=gpus,
    )


def _read_gpu(reader: _Reader, index: int, catalog: GpuCatalog | None) -> InventoryGpu:
    nvml = reader.nvml
    notes: list[str] = []
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    uuid = reader.optional(notes, "UUID", nvml.nvmlDeviceGetUUID, handle)
    pci = reader.optional(notes, "PCI info", nvml.nvmlDeviceGetPciInfo, handle)
    pci_id = f"0x{int(pci.pciDeviceId) & 0xFFFFFFFF:08X}" if pci is not None else None
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    capability = reader.optional(notes, "compute capability", nvml.nvmlDeviceGetCudaComputeCapability, handle)

    mig_capable, current, pending = False, None, None
    try:
        current_mode, pending_mode = nvml.nvmlDeviceGetMigMode(handle)
        mig_capable = True
        enabled = int(getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))
        current, pending = int(current_mode) == enabled, int(pending_mode) == enabled
    except nvml.NVMLError as exc:
        # NOT_SUPPORTED is how NVML says "not MIG-capable" (go-nvlib IsMigCapable; docs/hardware.md#nvml).
        if not reader.is_code(exc, "NVML_ERROR_NOT_SUPPORTED"):
            notes.append(f"MIG mode: {describe_nvml_error(nvml, exc)}")

    profiles = _read_profiles(reader, handle, memory.total, notes) if mig_capable else []
    instances = _read_instances(reader, handle, notes) if current else []
    spec = match_gpu(catalog, name=name, pci_device_id=pci_id) if catalog is not None else None
    return InventoryGpu(
        index=index,
        name=name,
        uuid=_text(uuid) if uuid is not None else None,
        pci_device_id=pci_id,
        memory_total_gib=round(memory.total / GIB, 3),
        memory_used_gib=round(memory.used / GIB, 3),
        mig_capable=mig_capable,
        mig_mode_current=current,
        mig_mode_pending=pending,
        mig_instances=instances,
        mig_profiles=profiles,
        catalog_id=spec.id if spec else None,
        architecture=spec.architecture if spec else None,
        compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
        notes=notes,
    )


def profile_name_from_nvml(profile_index: int, slice_count: int, memory_mb: int, device_total_bytes: int) -> str:
    """NVIDIA's profile name from NVML figures, as go-nvlib builds it (docs/hardware.md#mig-profile-names)."""
    fraction = math.ceil(memory_mb * MIB / device_total_bytes * 8) / 8
    gigabytes = round(fraction * math.ceil(device_total_bytes / GIB))
    return f"{slice_count}g.{gigabytes}gb{_PROFILE_SUFFIX.get(profile_index, '')}"


def _read_profiles(reader: _Reader, handle, total_bytes: int, notes: list[str]) -> list[MigProfileAvailability]:
    nvml = reader.nvml
    count = int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x12))
    profiles: list[MigProfileAvailability] = []
    for index in range(count):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        except nvml.NVMLError as exc:
            # Skipping NOT_SUPPORTED / INVALID_ARGUMENT is what mig-parted and go-nvlib do (docs/hardware.md#nvml).
            if reader.is_code(exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_INVALID_ARGUMENT"):
                continue
            notes.append(f"MIG profile {index}: {describe_nvml_error(nvml, exc)}")
            continue
        raw_name = _text(getattr(info, "name", b"") or "").strip()
        name = raw_name.removeprefix("MIG ").strip() or profile_name_from_nvml(
            index, int(info.sliceCount), int(info.memorySizeMB), int(total_bytes)
        )
        free = reader.optional(notes, f"{name} remaining capacity", nvml.nvmlDeviceGetGpuInstanceRemainingCapacity,
                               handle, info.id)
        placements = _placements(reader, handle, int(info.id), name, notes)
        profiles.append(
            MigProfileAvailability(
                name=name,
                profile_id=int(info.id),
                memory_gib=round(int(info.memorySizeMB) / 1024, 2),
                max_count=int(info.instanceCount),
                free_count=int(free) if free is not None else None,
                placements=placements,
            )
        )
    return profiles


def _placements(reader: _Reader, handle, profile_id: int, name: str, notes: list[str]) -> list[int]:
    """Legal start slots; pynvml's wrapper wants caller-allocated ctypes arrays (count first, then fill)."""
    nvml = reader.nvml
    placement_type = getattr(nvml, "c_nvmlGpuInstancePlacement_t", None)
    if placement_type is None:
        return []
    count = ctypes.c_uint(0)
    try:
        nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
        if count.value == 0:
            return []
        array = (placement_type * count.value)()
        nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    except nvml.NVMLError as exc:
        notes.append(f"{name} placements: {describe_nvml_error(nvml, exc)}")
        return []
    return sorted(int(array[i].start) for i in range(count.value))


def _read_instances(reader: _Reader, handle, notes: list[str]) -> list[MigInstance]:
    nvml = reader.nvml
    instances: list[MigInstance] = []
    maximum = reader.optional(notes, "MIG device count", nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)
    for index in range(int(maximum or 0)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except nvml.NVMLError as exc:
            # Holes in the index range are normal (go-nvlib VisitMigDevices skips them).
            if reader.is_code(exc, "NVML_ERROR_NOT_FOUND", "NVML_ERROR_INVALID_ARGUMENT"):
                continue
            notes.append(f"MIG device {index}: {describe_nvml_error(nvml, exc)}")
            continue
        name = _text(nvml.nvmlDeviceGetName(mig))
        profile = name.split(" MIG ", 1)[1].strip() if " MIG " in name else name
        gi_id = reader.optional(notes, f"MIG device {index} instance id", nvml.nvmlDeviceGetGpuInstanceId, mig)
        uuid = reader.optional(notes, f"MIG device {index} UUID", nvml.nvmlDeviceGetUUID, mig)
        memory = reader.optional(notes, f"MIG device {index} memory", nvml.nvmlDeviceGetMemoryInfo, mig)
        start = None
        if gi_id is not None:
            instance = reader.optional(notes, f"GPU instance {gi_id}", nvml.nvmlDeviceGetGpuInstanceById,
                                       handle, gi_id)
            info = reader.optional(notes, f"GPU instance {gi_id} info", nvml.nvmlGpuInstanceGetInfo, instance) \
                if instance is not None else None
            start = int(info.placement.start) if info is not None else None
        instances.append(
            MigInstance(
                profile=profile,
                gpu_instance_id=int(gi_id) if gi_id is not None else None,
                start=start,
                uuid=_text(uuid) if uuid is not None else None,
                memory_gib=round(memory.total / GIB, 2) if memory is not None else None,
            )
        )
    return instances


def load_inventory(path: Path | str, catalog: GpuCatalog | None = None) -> GpuInventory:
    """Read an inventory file (what `vlmopt gpus --json` writes, or a hand-written fleet); fills catalog ids."""
    inventory = load_model(GpuInventory, path)
    if catalog is not None:
        for gpu in inventory.gpus:
            if gpu.catalog_id is None:
                spec = match_gpu(catalog, name=gpu.name, pci_device_id=gpu.pci_device_id)
                gpu.catalog_id = spec.id if spec else None
            elif not any(g.id == gpu.catalog_id for g in catalog.gpus):
                raise ContractError(f"{path}: gpus[{gpu.index}].catalog_id: {gpu.catalog_id!r} is not in the GPU "
                                    f"catalog; known: {', '.join(g.id for g in catalog.gpus)}")
    return inventory


__all__ = ["NvmlUnavailable", "describe_nvml_error", "load_inventory", "profile_name_from_nvml", "read_inventory"]
