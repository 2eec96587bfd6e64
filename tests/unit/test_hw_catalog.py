"""The bundled GPU catalog loads, every GPU the issue names is in it, and bad catalogs are refused by file+field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlmopt.hw.catalog import catalog_problems, inventory_mismatches, load_gpu_catalog, match_gpu
from vlmopt.schemas.common import ContractError
from vlmopt.schemas.inventory import InventoryGpu, MigProfileAvailability

CATALOG = load_gpu_catalog()
REQUIRED = ["a30-24gb", "a100-40gb", "a100-80gb-sxm", "h100-sxm-80gb", "h100-pcie-80gb", "h100-nvl-94gb",
            "h200-sxm-141gb", "gh200-96gb", "b200-180gb", "l4-24gb", "l40s-48gb", "t4-16gb", "a10g-24gb"]


def test_every_required_gpu_is_present_with_sources():
    ids = {g.id for g in CATALOG.gpus}
    assert set(REQUIRED) <= ids
    for gpu in CATALOG.gpus:
        assert gpu.sources and all(s.strip() for s in gpu.sources), gpu.id
        assert gpu.dense_tflops("bf16") and gpu.memory_bandwidth_gbs > 0, gpu.id
        if gpu.fp8:
            assert gpu.tflops["fp8"] >= gpu.tflops["bf16"], gpu.id
        if gpu.mig:
            assert gpu.mig.source.strip(), gpu.id


def test_mig_capability_matches_the_hardware_families():
    mig = {g.id for g in CATALOG.gpus if g.mig is not None}
    assert {"a30-24gb", "a100-40gb", "h100-sxm-80gb", "h200-sxm-141gb", "b200-180gb"} <= mig
    assert not mig & {"l4-24gb", "l40s-48gb", "t4-16gb", "a10g-24gb"}


def test_fp8_needs_compute_capability_8_9():
    # FP8 W8A8 needs compute capability >= 8.9 (vLLM FP8 docs; docs/hardware.md#gpu-specs).
    for gpu in CATALOG.gpus:
        major, minor = map(int, gpu.compute_capability.split("."))
        assert gpu.fp8 == ((major, minor) >= (8, 9)), gpu.id


def test_usable_gib_per_profile_from_the_captured_tables():
    h100 = CATALOG.get("h100-sxm-80gb")
    assert h100.mig_profile("3g.40gb").memory_gib == 39.50
    assert CATALOG.get("h200-sxm-141gb").mig_profile("1g.18gb").memory_gib == 16.00
    assert CATALOG.get("a100-40gb").mig_profile("7g.40gb").memory_gib == 39.50
    # NVIDIA's own H200 capture (https://github.com/NVIDIA/mig-parted/issues/120): never above it
    h200 = CATALOG.get("h200-sxm-141gb")
    assert (h200.mig_profile("2g.35gb").memory_gib, h200.mig_profile("3g.71gb").memory_gib) == (32.25, 69.50)
    assert h200.mig_profile("7g.141gb").memory_gib == 139.75 and not h200.mig_profile("3g.71gb").memory_estimated
    estimated = CATALOG.get("gh200-144gb").mig_profile("3g.72gb")
    assert estimated.memory_estimated and "DERIVED" in estimated.memory_source
    assert not h100.mig_profile("3g.40gb").memory_estimated


@pytest.mark.parametrize(
    ("name", "pci", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", None, "h100-sxm-80gb"),
        ("H100 80GB HBM3", None, "h100-sxm-80gb"),  # older drivers drop the vendor prefix
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", None, "h100-sxm-80gb"),
        ("Tesla T4", None, "t4-16gb"),
        (None, "0x233010DE", "h100-sxm-80gb"),  # NVML pciDeviceId form
        (None, "0x2331", "h100-pcie-80gb"),
        ("something else", "0x20B710DE", "a30-24gb"),  # PCI id wins over the name
        ("NVIDIA GeForce RTX 4090", None, None),
        (None, "0xFFFF10DE", None),
    ],
)
def test_match_gpu(name, pci, expected):
    found = match_gpu(CATALOG, name=name, pci_device_id=pci)
    assert (found.id if found else None) == expected


def test_nvml_pci_ids_are_mig_parted_device_filters():
    assert CATALOG.get("h100-sxm-80gb").nvml_pci_device_ids == ["0x233010DE"]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _raw() -> dict:
    return CATALOG.model_dump(mode="json")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d["gpus"][1]["mig"]["profiles"][4].update(starts=[0, 6]),
         "gpus[1].mig.profiles[4] (3g.20gb).starts"),
        (lambda d: d["gpus"][1]["mig"]["profiles"][0].update(max_count=8), "max_count: 8 but only 7 fit"),
        (lambda d: d["gpus"][1]["mig"]["profiles"][3].update(compute_slices=3), "the name says 2g"),
        (lambda d: d["gpus"][1]["mig"]["profiles"].append(d["gpus"][1]["mig"]["profiles"][0]), "listed 2 times"),
        (lambda d: d["gpus"][2].update(id=d["gpus"][1]["id"]), "appears 2 times"),
        (lambda d: d["gpus"][2].update(pci_device_ids=["0x20B0"]), "0x20B0 is also listed"),
        (lambda d: d["gpus"][2].update(pci_device_ids=["2330"]), "not 4 hex digits"),
        (lambda d: d["gpus"][0].update(memory_gib=-1), "gpus.0.memory_gib"),
        (lambda d: d["gpus"][0].pop("sources"), "gpus.0.sources"),
        (lambda d: d["gpus"][0].update(colour="green"), "gpus.0.colour"),
    ],
)
def test_bad_catalog_names_file_and_field(tmp_path, mutate, words):
    data = _raw()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ContractError) as err:
        load_gpu_catalog(path)
    assert str(path) in str(err.value)
    assert words in str(err.value)


def test_catalog_roundtrip_has_no_problems(tmp_path):
    assert catalog_problems(CATALOG) == []
    assert load_gpu_catalog(_write(tmp_path, _raw())) == CATALOG


def test_missing_catalog_file_is_a_contract_error(tmp_path):
    with pytest.raises(ContractError, match="file not found"):
        load_gpu_catalog(tmp_path / "nope.yaml")


def test_inventory_mismatches_compare_only_what_nvml_reported():
    h100 = CATALOG.get("h100-sxm-80gb")
    reported = [
        MigProfileAvailability(name=p.name, profile_id=p.profile_id, memory_gib=p.memory_gib, max_count=p.max_count,
                               placements=[])
        for p in h100.mig.profiles
    ]
    gpu = InventoryGpu(index=0, name="NVIDIA H100 80GB HBM3", memory_total_gib=79.65, mig_capable=True,
                       mig_profiles=reported)
    assert inventory_mismatches(gpu, h100) == []
    reported[4] = reported[4].model_copy(update={"memory_gib": 38.0, "placements": [0, 2]})
    problems = inventory_mismatches(gpu.model_copy(update={"mig_profiles": reported}), h100)
    assert any("3g.40gb: 38.00 GiB (NVML) vs 39.50" in p for p in problems)
    assert any("starts [0, 2] (NVML) vs [0, 4]" in p for p in problems)
