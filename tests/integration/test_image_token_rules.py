"""Image token rules against the real image processors (transformers 5.x) of every VLM family vlmopt models.

For each family a model folder is written the way the hub lays one out (config.json from the family's config class,
processor files from `save_pretrained` of the real processor class with the published model's settings,
vlmopt/hw/processor_families.py); `arch_from_model_dir` reads it, and for several image sizes the rule's tokens,
tiles and encoder patches must equal what the processor produces: tokens = input_ids with the image minus without
it (the placeholder expansion and the per-image markers around it), tiles and patches from `pixel_values` (and the
grid outputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmopt.hw.models import arch_from_model_dir

pytest.importorskip("transformers", reason="needs transformers (scripts/setup.sh main)")
pytest.importorskip("torchvision", reason="the fast image processors of transformers 5.x need torchvision")
pytest.importorskip("tokenizers", reason="the stand-in tokenizer needs tokenizers")

from vlmopt.hw.processor_families import families, synthetic_image, tiles_and_patches

SIZES = [(56, 56), (640, 480), (1280, 720), (448, 1344)]
FAMILIES = families()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rule_matches_the_real_processor(family: str, tmp_path: Path) -> None:
    fam = FAMILIES[family]
    folder = tmp_path / family
    fam.config().save_pretrained(folder)
    processor = fam.processor("torchvision")
    processor.save_pretrained(folder)
    arch = arch_from_model_dir(folder)
    text_only = len(processor.tokenizer("hi", add_special_tokens=False)["input_ids"])
    for width, height in SIZES:
        out = processor(text=[fam.placeholder + "hi"], images=[[synthetic_image(width, height)]],
                        return_tensors="pt")
        tokens = len(out["input_ids"][0]) - text_only
        tiles, patches = tiles_and_patches(family, out, fam.patch_size)
        got = arch.image_encoding(width, height)
        if not arch.image_token_rule.in_decoder_sequence:
            # Llama 3.2 Vision: the decoder sequence gets one <|image|> token (and the processor's BOS); the rule
            # counts the tokens the cross-attention layers attend to: one per patch and a CLS per tile.
            assert tokens == 2
            tokens = patches
        assert (got.tokens, got.tiles, got.encoder_patches) == (tokens, tiles, patches), (family, width, height)
