"""A quality check that can fail: quantizing the vision tower too (--ignore overridden) must be measurably worse than
the variant made with the architecture's rules, on the same held-out image+text prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize
from vlmopt.schemas import VariantManifest, load_model


@pytest.fixture(scope="module")
def vision_included(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    request = QuantizeRequest(model_dir=tiny_model_dir, methods=parse_methods("int8"),
                              out_dir=tmp_path_factory.mktemp("vision-included"), ignore=["lm_head"],
                              name_suffix="with-vision")
    return run_quantize(request)


def test_override_warns_and_records_what_was_applied(vision_included) -> None:
    assert any("replaces the vision rules" in w for w in vision_included.warnings)
    [outcome] = vision_included.outcomes
    assert outcome.status == "created", outcome.message
    variant = outcome.variant
    assert variant.name == "int8-with-vision" and variant.ignore_rules == "user --ignore: lm_head"
    assert variant.vision_intact is False
    assert any("vision/projector tensors are quantized" in note for note in variant.notes)
    assert any(name.startswith("vision_tower.") for name in variant.quantized_modules)


def test_vision_included_is_measurably_worse(vision_included, tiny_variants: Path) -> None:
    correct = load_model(VariantManifest, tiny_variants).variant("int8").fidelity
    worse = vision_included.outcomes[0].variant.fidelity
    assert correct is not None and worse is not None
    assert worse.prompts == correct.prompts and worse.positions == correct.positions
    # Same prompts, deterministic int8 rounding: the gap is a real effect, not sampling noise. On this random tiny
    # model the vision tower carries little of the signal, so the margin is modest (measured: 2.7e-5 vs 1.9e-5).
    assert worse.mean_kl > 1.2 * correct.mean_kl, (worse.mean_kl, correct.mean_kl)
    assert worse.top1_agreement <= correct.top1_agreement
