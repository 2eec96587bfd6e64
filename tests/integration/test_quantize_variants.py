"""The four variants of the tiny LLaVA (session fixture `tiny_variants`): verified, scored, vision untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmopt.schemas import VariantManifest, load_model

METHODS = {"fp8": ("FP8_DYNAMIC", "float-quantized"), "int8": ("W8A8", "int-quantized"),
           "gptq": ("W4A16", "pack-quantized"), "awq": ("W4A16_ASYM", "pack-quantized")}
VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.")


@pytest.fixture(scope="module")
def manifest(tiny_variants: Path) -> VariantManifest:
    return load_model(VariantManifest, tiny_variants)


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def test_manifest_has_baseline_and_all_methods(manifest: VariantManifest, tiny_variants: Path,
                                               tiny_model_dir: Path) -> None:
    assert [v.name for v in manifest.variants] == ["bf16", "fp8", "int8", "gptq", "awq"]
    baseline = manifest.variant("bf16")
    assert baseline.method == "none" and baseline.fidelity is None
    assert manifest.variant_dir("bf16", tiny_variants) == tiny_model_dir.resolve()
    assert manifest.architecture == "LlavaForConditionalGeneration"


@pytest.mark.parametrize("method", list(METHODS))
def test_variant_verified_and_scored(manifest: VariantManifest, tiny_variants: Path, method: str) -> None:
    variant = manifest.variant(method)
    scheme, fmt = METHODS[method]
    assert variant.verified and variant.scheme == scheme and variant.method == method
    assert variant.fidelity is not None
    assert 0 <= variant.fidelity.mean_kl < 0.1, "a tiny model quantized this way stays close to bf16"
    assert 0.3 < variant.fidelity.top1_agreement <= 1
    assert variant.fidelity.prompts == 8 and variant.fidelity.positions > 8 * 16
    assert variant.wall_time_s > 0 and variant.peak_memory_bytes > 100 * 1024**2
    assert variant.provenance is not None and variant.provenance.kind == "measured"
    assert variant.vision_intact is True
    assert len(variant.quantized_modules) == 14  # 7 Linears x 2 decoder layers
    assert variant.bytes_on_disk < manifest.variant("bf16").bytes_on_disk

    folder = manifest.variant_dir(method, tiny_variants)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["quantization_config"]["format"] == fmt
    for name in ("tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    if variant.calibration and variant.calibration.samples:
        assert method in ("gptq", "awq") and variant.calibration.source == "synthetic"


@pytest.mark.parametrize("method", list(METHODS))
def test_vision_tower_byte_identical_to_baseline(manifest: VariantManifest, tiny_variants: Path,
                                                 tiny_model_dir: Path, method: str) -> None:
    """Read with the safetensors library (not vlmopt's own header reader): every vision/projector/lm_head tensor
    equals the bf16 model's exactly, and text decoder Linears are stored quantized."""
    import torch

    base = _tensors(tiny_model_dir)
    variant = _tensors(manifest.variant_dir(method, tiny_variants))
    vision = [k for k in base if k.startswith(VISION_PREFIXES)]
    assert len(vision) > 20
    for key in [*vision, "language_model.lm_head.weight"]:
        assert key in variant, key
        assert variant[key].dtype == base[key].dtype and torch.equal(variant[key], base[key]), key
    assert not [k for k in variant if k.startswith(VISION_PREFIXES) and "weight_" in k]
    down = "language_model.model.layers.0.mlp.down_proj"
    if method in ("gptq", "awq"):
        assert variant[f"{down}.weight_packed"].dtype == torch.int32
    else:
        assert variant[f"{down}.weight"].dtype == (torch.float8_e4m3fn if method == "fp8" else torch.int8)
