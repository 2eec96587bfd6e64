"""Load and check the GPU catalog (bundled vlmopt/data/gpus.yaml), and find the entry for a GPU NVML reports."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from vlmopt.paths import data_file
from vlmopt.schemas.catalog import GpuCatalog, GpuSpec
from vlmopt.schemas.common import ContractError, load_model
from vlmopt.schemas.inventory import InventoryGpu

_PCI_ID = re.compile(r"^0x[0-9A-Fa-f]{4}$")
_PROFILE_NAME = re.compile(r"^(?P<compute>\d+)g\.(?P<gb>\d+)gb(?P<suffix>[+-][a-z.]+)?$")


def default_catalog_path() -> Path:
    return data_file("gpus.yaml")


def load_gpu_catalog(path: Path | None = None) -> GpuCatalog:
    """Read and check the GPU catalog; ContractError names the file and the field on any problem."""
    path = Path(path) if path is not None else default_catalog_path()
    catalog = load_model(GpuCatalog, path)
    problems = catalog_problems(catalog)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ContractError(f"{path}: invalid: " + "; ".join(problems[:3]) + more)
    return catalog


def catalog_problems(catalog: GpuCatalog) -> list[str]:
    """Every rule a well-formed catalog keeps, as 'gpus[i].field: what is wrong' lines (empty when all hold).

    Schema types are pydantic's job; these are the cross-field rules: unique ids, names and PCI ids, and MIG tables
    whose placements stay inside the GPU (docs/hardware.md#3-mig-layouts; NVIDIA's MIG user guide,
    https://docs.nvidia.com/datacenter/tesla/mig-user-guide/).
    """
    problems: list[str] = []
    ids = Counter(g.id for g in catalog.gpus)
    # Counted once per GPU: 'NVIDIA A30' and 'A30' under one entry are the same name, not a clash.
    names = Counter(n for g in catalog.gpus for n in {_normalise_name(n) for n in g.names})
    pci = Counter(p for g in catalog.gpus for p in {_normalise_pci(p) for p in g.pci_device_ids if _PCI_ID.match(p)})
    for i, gpu in enumerate(catalog.gpus):
        where = f"gpus[{i}]"
        if ids[gpu.id] > 1:
            problems.append(f"{where}.id: {gpu.id!r} appears {ids[gpu.id]} times")
        if not gpu.names:
            problems.append(f"{where}.names: at least one NVML name is needed to match a GPU")
        for name in gpu.names:
            if names[_normalise_name(name)] > 1:
                problems.append(f"{where}.names: {name!r} is also listed under another GPU")
        for pci_id in gpu.pci_device_ids:
            if not _PCI_ID.match(pci_id):
                problems.append(f"{where}.pci_device_ids: {pci_id!r} is not 4 hex digits like '0x2330'")
            elif pci[_normalise_pci(pci_id)] > 1:
                problems.append(f"{where}.pci_device_ids: {pci_id} is also listed under another GPU")
        for dtype, value in gpu.tflops.items():
            if value <= 0:
                problems.append(f"{where}.tflops.{dtype}: must be > 0, got {value}")
        if gpu.fp8 and "fp8" not in gpu.tflops:
            problems.append(f"{where}.tflops: fp8 is true but no fp8 figure is given")
        if gpu.mig is not None:
            problems.extend(_mig_problems(gpu, where))
    return problems


def _mig_problems(gpu: GpuSpec, where: str) -> list[str]:
    assert gpu.mig is not None
    geometry = gpu.mig
    problems: list[str] = []
    if not geometry.profiles:
        problems.append(f"{where}.mig.profiles: a MIG-capable GPU needs at least one profile")
    seen = Counter(p.name for p in geometry.profiles)
    for j, profile in enumerate(geometry.profiles):
        at = f"{where}.mig.profiles[{j}] ({profile.name})"
        if seen[profile.name] > 1:
            problems.append(f"{at}.name: listed {seen[profile.name]} times")
        match = _PROFILE_NAME.match(profile.name)
        if not match:
            problems.append(f"{at}.name: expected '<N>g.<M>gb' with an optional suffix such as '+me'")
        elif int(match["compute"]) != profile.compute_slices:
            problems.append(f"{at}.compute_slices: {profile.compute_slices} but the name says {match['compute']}g")
        if profile.media_extensions != ("+me" in profile.name):
            problems.append(f"{at}.media_extensions: must be true exactly when the name ends in '+me'")
        if profile.compute_slices > geometry.compute_slices:
            problems.append(
                f"{at}.compute_slices: {profile.compute_slices} exceeds the GPU's {geometry.compute_slices}"
            )
        if profile.memory_slices > geometry.memory_slots:
            problems.append(f"{at}.memory_slices: {profile.memory_slices} exceeds the GPU's {geometry.memory_slots}")
        if not profile.starts:
            problems.append(f"{at}.starts: at least one legal start is needed")
        if len(set(profile.starts)) != len(profile.starts):
            problems.append(f"{at}.starts: {profile.starts} repeats a start")
        for start in profile.starts:
            if start < 0 or start + profile.memory_slices > geometry.memory_slots:
                problems.append(
                    f"{at}.starts: start {start} + {profile.memory_slices} memory slices runs past the "
                    f"{geometry.memory_slots} memory slots"
                )
        # Instances of one profile never overlap, so more than fit side by side cannot be created.
        fit = _max_disjoint(profile.starts, profile.memory_slices)
        if profile.max_count > fit:
            problems.append(f"{at}.max_count: {profile.max_count} but only {fit} fit side by side at its starts")
        if profile.memory_gib > gpu.memory_gib:
            problems.append(f"{at}.memory_gib: {profile.memory_gib} exceeds the GPU's {gpu.memory_gib}")
    return problems


def _max_disjoint(starts: list[int], size: int) -> int:
    count, end = 0, -1
    for start in sorted(starts):
        if start > end:
            count += 1
            end = start + size - 1
    return count


def _normalise_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' and 'H100 80GB HBM3' (older drivers) compare equal; MIG device suffix dropped."""
    text = name.strip().lower()
    text = re.sub(r"\s+mig\s+\S+$", "", text)
    for prefix in ("nvidia ", "tesla "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return re.sub(r"[\s_-]+", " ", text).strip()


def _normalise_pci(pci_device_id: str) -> str:
    """'0x233010DE' (NVML pciDeviceId), '0x2330', '2330', 0x233010DE as int -> '2330'."""
    text = str(pci_device_id).strip().lower()
    value = int(text, 16)
    if value > 0xFFFF:  # NVML packs (device << 16) | vendor
        value >>= 16
    return f"{value:04x}"


def match_gpu(catalog: GpuCatalog, name: str | None = None, pci_device_id: str | int | None = None) -> GpuSpec | None:
    """The catalog entry for a GPU, by PCI device id first (exact), else by NVML name; None when unknown."""
    if pci_device_id is not None:
        try:
            wanted = _normalise_pci(hex(pci_device_id) if isinstance(pci_device_id, int) else pci_device_id)
        except ValueError:
            wanted = None
        if wanted is not None:
            for gpu in catalog.gpus:
                if any(_normalise_pci(p) == wanted for p in gpu.pci_device_ids):
                    return gpu
    if name:
        wanted_name = _normalise_name(name)
        for gpu in catalog.gpus:
            if any(_normalise_name(n) == wanted_name for n in gpu.names):
                return gpu
    return None


def inventory_mismatches(gpu: InventoryGpu, spec: GpuSpec, memory_tolerance_gib: float = 0.1) -> list[str]:
    """Where what NVML reports for a GPU disagrees with its catalog entry (MIG profiles, memory, placements).

    Only figures NVML actually reported are compared: an empty placement list (needs root) is not a mismatch.
    """
    problems: list[str] = []
    if abs(gpu.memory_total_gib - spec.memory_gib) > max(memory_tolerance_gib, 0.01 * spec.memory_gib):
        problems.append(f"memory: NVML {gpu.memory_total_gib:.2f} GiB, catalog {spec.memory_gib:.2f} GiB")
    if gpu.mig_capable != (spec.mig is not None):
        problems.append(f"MIG: NVML says capable={gpu.mig_capable}, catalog says {spec.mig is not None}")
    if spec.mig is None or not gpu.mig_profiles:
        return problems
    catalog_profiles = {p.name: p for p in spec.mig.profiles}
    for reported in gpu.mig_profiles:
        known = catalog_profiles.get(reported.name)
        if known is None:
            problems.append(f"profile {reported.name}: reported by NVML, missing from the catalog")
            continue
        if reported.profile_id is not None and reported.profile_id != known.profile_id:
            problems.append(f"profile {reported.name}: id {reported.profile_id} (NVML) vs {known.profile_id}")
        if reported.max_count is not None and reported.max_count != known.max_count:
            problems.append(f"profile {reported.name}: max count {reported.max_count} (NVML) vs {known.max_count}")
        if reported.memory_gib is not None and abs(reported.memory_gib - known.memory_gib) > memory_tolerance_gib:
            problems.append(
                f"profile {reported.name}: {reported.memory_gib:.2f} GiB (NVML) vs {known.memory_gib:.2f} GiB"
            )
        if reported.placements and sorted(reported.placements) != sorted(known.starts):
            problems.append(f"profile {reported.name}: starts {reported.placements} (NVML) vs {known.starts}")
    missing = set(catalog_profiles) - {p.name for p in gpu.mig_profiles}
    problems.extend(f"profile {name}: in the catalog, not reported by NVML" for name in sorted(missing))
    return problems


__all__ = ["catalog_problems", "default_catalog_path", "inventory_mismatches", "load_gpu_catalog", "match_gpu"]
