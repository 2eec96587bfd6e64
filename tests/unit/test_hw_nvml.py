"""NVML code paths at the nvidia-ml-py boundary: a fake `pynvml` module with NVML's functions and errors."""

from __future__ import annotations

import sys

import pytest

from tests.unit.nvml_fake import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    FakeGpu,
    default_fleet,
    h100_profiles,
    make_fake_pynvml,
)
from vlmopt.hw.catalog import inventory_mismatches, load_gpu_catalog
from vlmopt.hw.nvml import NvmlUnavailable, load_inventory, profile_name_from_nvml, read_inventory
from vlmopt.schemas.common import ContractError, save_model

CATALOG = load_gpu_catalog()


@pytest.fixture
def fake(monkeypatch):
    module = make_fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_reads_a_mig_h100_and_a_plain_l4(fake):
    inventory = read_inventory()  # imports the fake through sys.modules
    assert inventory.source == "nvml" and inventory.driver_version == "580.95.05"
    assert inventory.cuda_driver_version == "13.0"
    h100, l4 = inventory.gpus
    assert (h100.name, h100.pci_device_id, h100.catalog_id) == ("NVIDIA H100 80GB HBM3", "0x233010DE",
                                                                "h100-sxm-80gb")
    assert h100.memory_total_gib == pytest.approx(81559 / 1024, abs=0.001)
    assert (h100.mig_capable, h100.mig_mode_current, h100.mig_mode_pending) == (True, True, True)
    assert h100.compute_capability == "9.0" and h100.architecture == "hopper"
    profiles = {p.name: p for p in h100.mig_profiles}
    assert profiles["3g.40gb"].placements == [0, 4] and profiles["3g.40gb"].max_count == 2
    assert profiles["1g.20gb"].placements == [0, 2, 4, 6] and profiles["1g.20gb"].profile_id == 15
    assert [(i.profile, i.start, i.gpu_instance_id) for i in h100.mig_instances] == [("3g.40gb", 4, 2),
                                                                                      ("2g.20gb", 0, 3)]
    assert inventory_mismatches(h100, CATALOG.get("h100-sxm-80gb")) == []
    assert (l4.mig_capable, l4.mig_profiles, l4.notes, l4.catalog_id) == (False, [], [], "l4-24gb")
    assert fake.calls[-1] == "nvmlShutdown"


def test_never_changes_mig_state(fake):
    read_inventory()
    assert not [c for c in fake.calls if any(w in c for w in ("Set", "Create", "Destroy"))]


@pytest.mark.parametrize(
    ("code", "words"),
    [(NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver"), (NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
     (NVML_ERROR_NO_PERMISSION, "no permission")],
)
def test_init_errors_become_one_clear_line(monkeypatch, code, words):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(fail={"nvmlInit": code}))
    with pytest.raises(NvmlUnavailable) as err:
        read_inventory()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_error_mid_query_still_shuts_nvml_down(monkeypatch):
    module = make_fake_pynvml(fail={"nvmlDeviceGetCount": NVML_ERROR_NO_PERMISSION})
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(NvmlUnavailable, match="no permission"):
        read_inventory()
    assert module.calls[-1] == "nvmlShutdown"


def test_refused_placement_query_is_noted_not_fatal(monkeypatch):
    # Placements "Require privileged user" (NVML API reference; docs/hardware.md#nvml).
    module = make_fake_pynvml(fail={"nvmlDeviceGetGpuInstancePossiblePlacements": NVML_ERROR_NO_PERMISSION})
    monkeypatch.setitem(sys.modules, "pynvml", module)
    h100 = read_inventory().gpus[0]
    assert all(p.placements == [] for p in h100.mig_profiles)
    assert any("placements: no permission" in note for note in h100.notes)
    assert inventory_mismatches(h100, CATALOG.get("h100-sxm-80gb")) == []  # missing placements are not mismatches


def test_mig_mode_permission_error_is_noted(monkeypatch):
    module = make_fake_pynvml(fail={"nvmlDeviceGetMigMode": NVML_ERROR_NO_PERMISSION})
    monkeypatch.setitem(sys.modules, "pynvml", module)
    h100 = read_inventory().gpus[0]
    assert h100.mig_capable is False and any(n.startswith("MIG mode: no permission") for n in h100.notes)


def test_mig_capable_but_disabled_lists_profiles_without_instances(monkeypatch):
    fleet = default_fleet()
    fleet[0].mig = (0, 1)  # disabled now, enabled after the next reset
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(fleet))
    h100 = read_inventory().gpus[0]
    assert (h100.mig_mode_current, h100.mig_mode_pending) == (False, True)
    assert h100.mig_instances == [] and len(h100.mig_profiles) == 7


def test_profile_names_are_derived_when_nvml_gives_none(monkeypatch):
    fleet = [FakeGpu("NVIDIA H100 80GB HBM3", 0x233010DE, 81559, 0, mig=(1, 1), profiles=h100_profiles(False))]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(fleet))
    names = [p.name for p in read_inventory().gpus[0].mig_profiles]
    assert names == ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me", "1g.20gb"]


def test_profile_name_rule_from_go_nvlib():
    # frac = ceil(MiB x 2^20 / total x 8) / 8; GB = round(frac x ceil(total / GiB)) (docs/hardware.md#mig-profile-names)
    h100_total = 81559 * 1024**2  # ceil(79.65 GiB) = 80
    assert profile_name_from_nvml(0x0, 1, 9984, h100_total) == "1g.10gb"  # 1/8 x 80
    assert profile_name_from_nvml(0x2, 3, 40448, h100_total) == "3g.40gb"  # 4/8 x 80
    assert profile_name_from_nvml(0x7, 1, 9984, h100_total) == "1g.10gb+me"
    h200_total = 143771 * 1024**2  # ceil(140.4 GiB) = 141
    assert profile_name_from_nvml(0x0, 1, 16384, h200_total) == "1g.18gb"  # round(141 / 8) = 18


def test_missing_nvidia_ml_py_is_a_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(NvmlUnavailable, match="nvidia-ml-py is not installed"):
        read_inventory()


def test_inventory_file_roundtrip_and_catalog_check(fake, tmp_path):
    inventory = read_inventory()
    path = save_model(inventory, tmp_path / "fleet.json")
    assert load_inventory(path, catalog=CATALOG) == inventory
    inventory.gpus[0].catalog_id = "h900"
    bad = save_model(inventory, tmp_path / "bad.json")
    with pytest.raises(ContractError, match=r"bad.json: gpus\[0\].catalog_id: 'h900' is not in the GPU catalog"):
        load_inventory(bad, catalog=CATALOG)


def test_hand_written_fleet_gets_catalog_ids(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("source: my-fleet\ngpus:\n  - {index: 0, name: NVIDIA A100-SXM4-80GB, memory_total_gib: 80}\n"
                    "  - {index: 1, name: Tesla T4, memory_total_gib: 15, usd_per_hour: 0.2}\n")
    inventory = load_inventory(path, catalog=CATALOG)
    assert [g.catalog_id for g in inventory.gpus] == ["a100-80gb-sxm", "t4-16gb"]
