"""Model architectures: bundled specs, config.json parsing, image tokens as a function of image size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmopt.hw.models import ImageTokenRule, arch_from_model_dir, list_bundled_models, load_model_arch
from vlmopt.schemas.common import ContractError

REQUIRED = ["qwen2.5-vl-3b", "qwen2.5-vl-7b", "qwen2.5-vl-32b", "qwen2.5-vl-72b", "llava-1.5-7b", "llava-1.5-13b",
            "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "pixtral-12b", "llama-3.2-11b-vision"]


def test_every_required_model_is_bundled_with_sources():
    assert set(REQUIRED) <= set(list_bundled_models())
    for name in REQUIRED:
        arch = load_model_arch(name)
        assert arch.name == name and arch.sources and arch.hf_id


@pytest.mark.parametrize("name", REQUIRED)
def test_parameters_from_shapes_match_the_published_size(name):
    # The shapes alone (layers, widths, vocab, vision tower, projector) must add up to the model card's size.
    arch = load_model_arch(name)
    assert arch.total_params == pytest.approx(arch.total_params_published, rel=0.03)
    assert arch.vision_params > 0 and arch.projector_params > 0 and arch.language_params > arch.vision_params


def test_qwen2_5_vl_7b_language_parameters_by_hand():
    arch = load_model_arch("qwen2.5-vl-7b")
    per_layer = 3584 * 3584 * 2 + 3584 * 512 * 2 + 3 * 3584 * 18944  # q,o + k,v + gate,up,down
    embeddings = 152064 * 3584 * 2  # untied: embed_tokens + lm_head
    norms = (2 * 28 + 1) * 3584
    assert arch.language_params == 28 * per_layer + embeddings + norms


@pytest.mark.parametrize(
    ("model", "size", "tokens"),
    [
        ("llava-1.5-7b", (336, 336), 576),  # (336 / 14)^2
        ("llava-1.5-7b", (1920, 1080), 576),  # resized to 336x336 whatever the input
        ("qwen2.5-vl-7b", (448, 448), 256 + 2),  # 448 / 28 = 16 -> 16 x 16, + <|vision_start|>, <|vision_end|>
        ("qwen2.5-vl-7b", (1280, 720), 1196 + 2),  # round(1280/28)=46, round(720/28)=26 -> 46 x 26
        ("qwen2.5-vl-7b", (28, 28), 4 + 2),  # below min_pixels 3136 = 4 x 28 x 28 -> scaled up to 56 x 56
        ("gemma-3-4b", (1280, 720), 256 + 4),  # soft tokens + <start_of_image> "\n\n" <end_of_image> "\n\n"
        ("pixtral-12b", (1024, 1024), 4160),  # 64 rows x (64 patches + 1 break)
        ("pixtral-12b", (512, 256), 528),  # 16 rows x (32 + 1)
        ("pixtral-12b", (2048, 1024), 2080),  # scaled to 1024 x 512: 32 rows x (64 + 1)
        ("llama-3.2-11b-vision", (560, 560), 1601),  # one tile: (560/14)^2 + CLS
        ("llama-3.2-11b-vision", (1120, 1120), 4 * 1601),
        ("llama-3.2-11b-vision", (4000, 4000), 4 * 1601),  # at most 4 tiles
    ],
)
def test_image_tokens(model, size, tokens):
    assert load_model_arch(model).image_tokens(*size) == tokens


def test_qwen_max_pixels_caps_huge_images():
    arch = load_model_arch("qwen2.5-vl-7b")
    assert arch.image_tokens(8000, 8000) <= 12845056 // (28 * 28) + 2  # max_pixels / 784 = 16384 tokens


def test_gemma_pan_and_scan_adds_256_tokens_per_crop():
    rule = ImageTokenRule(kind="pan_and_scan", tokens_per_image=256)
    assert rule.count(896, 896) == 256  # square: ratio 1 < 1.2, no crops
    assert rule.count(1792, 896) == 256 * 3  # ratio 2 -> 2 crops + the whole image


def test_encoder_patches_are_not_the_decoder_tokens():
    # Gemma 3: the SigLIP encoder runs on (896/14)^2 = 4096 patches, average-pooled to 256 soft tokens.
    gemma = load_model_arch("gemma-3-4b").image_encoding(1280, 720)
    assert (gemma.tokens, gemma.encoder_patches, gemma.tiles) == (260, 4096, 1)
    # Qwen2.5-VL: 2 x 2 patches merge into one token: 46 x 26 tokens <- 92 x 52 patches.
    qwen = load_model_arch("qwen2.5-vl-7b").image_encoding(1280, 720)
    assert (qwen.tokens, qwen.encoder_patches) == (46 * 26 + 2, 92 * 52)
    # Pixtral: one patch per token, breaks are not patches.
    pixtral = load_model_arch("pixtral-12b").image_encoding(512, 256)
    assert (pixtral.tokens, pixtral.encoder_patches) == (16 * 33, 16 * 32)


def test_anyres_by_hand():
    # LLaVA-NeXT (336 crops, 24 x 24 features each): a 640x480 image fits best in 672x672 (scale 1.05, keeps all
    # 307200 pixels, wastes less than 1008x336 would lose); 2 x 2 crops + base = 5 tiles. Feature grid 48 x 48,
    # unpadded to the 4:3 image: new height round(480 x 48/640) = 36 -> 48 x 36 = 1728 features + 36 newlines,
    # + 576 for the base crop = 2340 tokens.
    rule = ImageTokenRule(kind="anyres", tile_size=336, patch_size=14, tokens_per_tile=576,
                          grid_pinpoints=[(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)])
    enc = rule.encode(640, 480)
    assert (enc.tokens, enc.tiles, enc.encoder_patches) == (48 * 36 + 36 + 576, 5, 5 * 576)


def test_idefics3_tiles_by_hand():
    # 640x480 -> longest edge 1456, height int(1456 / (4/3)) = 1092; tiles of 364: 4 cols x 3 rows + 1 global.
    # tokens: global 169 + 3, each tile 169 + 2 (<fake><row_i_col_j>), one "\n" per row.
    rule = ImageTokenRule(kind="idefics3", tile_size=364, patch_size=14, tokens_per_tile=169, longest_edge=1456)
    enc = rule.encode(640, 480)
    assert (enc.tokens, enc.tiles, enc.encoder_patches) == (172 + 3 * (171 * 4 + 1), 13, 13 * 26 * 26)


def test_internvl_tiles_by_hand():
    # 1280x720 (aspect 1.78), at most 12 tiles: the closest grid ratio is 2.0 (diff 0.22; 5 x 3 = 1.67 would need 15
    # tiles); 2 x 1 and 4 x 2 tie, and the larger wins while the image covers more than half of it
    # (921600 px > 0.5 x 8 x 448^2 = 802816) -> 8 tiles + a thumbnail; 256 tokens each + <img></img>.
    rule = ImageTokenRule(kind="internvl", tile_size=448, patch_size=14, tokens_per_tile=256, max_tiles=12)
    enc = rule.encode(1280, 720)
    assert (enc.tokens, enc.tiles, enc.encoder_patches) == (2 + 9 * 256, 9, 9 * 32 * 32)
    assert rule.encode(448, 448).tiles == 1  # a 1 x 1 grid gets no thumbnail


def test_mllama_canvas_by_hand():
    # 560 tiles, at most 4. 1000x500: every canvas at least 1 tile high and 2 wide upscales by 1.12 (1120/1000);
    # the tie goes to the smallest area, 1 x 2 tiles. 1000x600 needs 2 tiles of height too: 2 x 2.
    arch = load_model_arch("llama-3.2-11b-vision")
    assert (arch.image_encoding(1000, 500).tiles, arch.image_tokens(1000, 500)) == (2, 2 * 1601)
    assert arch.image_encoding(1000, 600).tiles == 4


def test_llama_vision_tokens_do_not_enter_the_decoder_sequence():
    assert load_model_arch("llama-3.2-11b-vision").image_token_rule.in_decoder_sequence is False
    assert load_model_arch("qwen2.5-vl-7b").image_token_rule.in_decoder_sequence is True


def test_bad_image_size_and_rule():
    with pytest.raises(ValueError, match="positive"):
        load_model_arch("llava-1.5-7b").image_tokens(0, 10)
    with pytest.raises(ValueError, match="needs tokens_per_image"):
        ImageTokenRule(kind="fixed")


# ---- config.json parsing ------------------------------------------------------------------------------------------
def _model_dir(tmp_path: Path, config: dict, preprocessor: dict | None = None) -> Path:
    folder = tmp_path / config["model_type"]
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


SHAPES = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim", "vocab_size",
          "intermediate_size", "total_params", "cross_attention_layers")


def _same_shapes(a, b) -> None:
    for field in SHAPES:
        assert getattr(a, field) == getattr(b, field), field
    for size in ((448, 448), (1280, 720)):
        assert a.image_tokens(*size) == b.image_tokens(*size)


def test_qwen2_5_vl_config_matches_bundled_spec(tmp_path):
    config = {
        "model_type": "qwen2_5_vl", "tie_word_embeddings": False,
        "text_config": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4, "vocab_size": 152064, "intermediate_size": 18944,
                        "max_position_embeddings": 128000},
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 3584,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    }
    arch = arch_from_model_dir(_model_dir(tmp_path, config, {"min_pixels": 3136, "max_pixels": 12845056}))
    _same_shapes(arch, load_model_arch("qwen2.5-vl-7b"))
    assert arch.family == "qwen2_5_vl"


def test_llava_config_matches_bundled_spec(tmp_path):
    config = {
        "model_type": "llava", "vision_feature_select_strategy": "default",
        "text_config": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                        "num_key_value_heads": 32, "vocab_size": 32064, "intermediate_size": 11008,
                        "max_position_embeddings": 4096},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "patch_size": 14, "image_size": 336},
    }
    _same_shapes(arch_from_model_dir(_model_dir(tmp_path, config)), load_model_arch("llava-1.5-7b"))


def test_gemma3_config_matches_bundled_spec(tmp_path):
    config = {
        "model_type": "gemma3", "mm_tokens_per_image": 256,
        "text_config": {"hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8,
                        "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                        "intermediate_size": 10240, "max_position_embeddings": 131072, "sliding_window": 1024},
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27, "intermediate_size": 4304,
                          "patch_size": 14, "image_size": 896},
    }
    arch = arch_from_model_dir(_model_dir(tmp_path, config))
    _same_shapes(arch, load_model_arch("gemma-3-4b"))
    assert arch.sliding_window == 1024


def test_mllama_config_matches_bundled_spec(tmp_path):
    config = {
        "model_type": "mllama",
        "text_config": {"hidden_size": 4096, "num_hidden_layers": 40, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336,
                        "max_position_embeddings": 131072, "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38]},
        "vision_config": {"hidden_size": 1280, "num_hidden_layers": 32, "num_global_layers": 8,
                          "intermediate_size": 5120, "patch_size": 14, "image_size": 560, "max_num_tiles": 4,
                          "vision_output_dim": 7680},
    }
    _same_shapes(arch_from_model_dir(_model_dir(tmp_path, config)), load_model_arch("llama-3.2-11b-vision"))


def test_pixtral_as_llava_config_matches_bundled_spec(tmp_path):
    config = {
        "model_type": "llava",
        "text_config": {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
                        "intermediate_size": 14336, "max_position_embeddings": 1024000},
        "vision_config": {"model_type": "pixtral", "hidden_size": 1024, "num_hidden_layers": 24,
                          "intermediate_size": 4096, "patch_size": 16, "image_size": 1024},
    }
    _same_shapes(arch_from_model_dir(_model_dir(tmp_path, config)), load_model_arch("pixtral-12b"))


def test_mistral3_config_uses_merged_patch_rows(tmp_path):
    config = {
        "model_type": "mistral3", "spatial_merge_size": 2,
        "text_config": {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
                        "intermediate_size": 32768, "max_position_embeddings": 131072},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "patch_size": 14, "image_size": 1540},
    }
    arch = arch_from_model_dir(_model_dir(tmp_path, config))
    assert arch.family == "mistral3"
    assert arch.image_tokens(1540, 1540) == 55 * 56  # 1540 / 28 = 55 rows x (55 + 1 break)


def test_tiny_test_model_config(tmp_path):
    # The shapes vlmopt.testing.tiny_vlm writes (TinyVlmSpec defaults); the real folder is covered in integration.
    config = {
        "model_type": "llava", "vision_feature_select_strategy": "default",
        "text_config": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "vocab_size": 1024, "intermediate_size": 512,
                        "max_position_embeddings": 2048},
        "vision_config": {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "patch_size": 14,
                          "image_size": 56},
    }
    arch = arch_from_model_dir(_model_dir(tmp_path, config))
    assert arch.image_tokens(56, 56) == 16 and arch.head_dim == 64
    assert arch.name == "llava"


def test_load_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(ContractError, match="bundled: gemma-3-12b"):
        load_model_arch("no-such-model")
    with pytest.raises(ContractError, match="model_type 'whisper' is not supported"):
        arch_from_model_dir(_model_dir(tmp_path, {"model_type": "whisper"}))
    broken = {"model_type": "gemma3", "text_config": {"hidden_size": 8}, "vision_config": {}}
    with pytest.raises(ContractError, match=r"config\.json: missing or malformed field"):
        arch_from_model_dir(_model_dir(tmp_path, broken))
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nfamily: llava\n")
    with pytest.raises(ContractError, match=r"bad\.yaml: invalid: num_layers"):
        load_model_arch(str(spec))
