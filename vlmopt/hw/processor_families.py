"""The real transformers processor classes of the VLM families vlmopt models, set up like the published models.

Used to check the image token rules (tests/integration/test_image_token_rules.py) and to time each family's
preprocessing per image size (scripts/measure_processor_costs.py -> vlmopt/data/processor_costs.yaml). No hub
access: each processor gets its image processor with the published model's settings (named per family below) and
a stand-in word-level tokenizer that has the family's special tokens, so token counts and image work are real while
nothing is downloaded. Needs transformers (and torchvision for the default fast image processors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["torchvision", "pil"]


def stand_in_tokenizer(named: dict[str, str]):
    """A word-level tokenizer: one token per character, every special token atomic, "\\n\\n" one token as in the
    real models' tokenizers. `named` become attributes (tokenizer.image_token, ...) the processors look up."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = sorted(set(named.values()) | {"<pad>", "<s>", "</s>", "\n\n", "\n\n\n", "\n\n\n\n"}
                      | {f"<row_{r}_col_{c}>" for r in range(1, 13) for c in range(1, 13)}
                      | {"<fake_token_around_image>", "<global-img>"})
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in "abcdefghijklmnopqrstuvwxyz \n":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens=named)
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def _image_processor(name: str, backend: Backend, **kwargs: Any):
    import transformers

    cls = getattr(transformers, name + ("Pil" if backend == "pil" else ""))
    return cls(**kwargs)


@dataclass(frozen=True)
class Family:
    """One family: its config (for `arch_from_model_dir`), its processor, and the per-image placeholder."""

    name: str
    published: str  # whose processor settings these are
    config: Callable[[], Any]
    processor: Callable[[Backend], Any]
    placeholder: str  # what the chat template puts in the prompt per image
    patch_size: int


def families() -> dict[str, Family]:
    import transformers as t

    tok = stand_in_tokenizer
    onevision_pinpoints = [[384 * a, 384 * b] for a in range(1, 7) for b in range(1, 7)]
    out = [
        Family(
            "llava", "llava-hf/llava-1.5-7b-hf (CLIP 336/14: resize and crop to 336, 576 tokens)",
            lambda: t.LlavaConfig(vision_config={"image_size": 336, "patch_size": 14, "hidden_size": 64,
                                                 "num_attention_heads": 2, "num_hidden_layers": 2,
                                                 "intermediate_size": 128},
                                  vision_feature_select_strategy="default"),
            lambda b: t.LlavaProcessor(
                image_processor=_image_processor("CLIPImageProcessor", b, size={"shortest_edge": 336},
                                                 crop_size={"height": 336, "width": 336}),
                tokenizer=tok({"image_token": "<image>"}), patch_size=14, vision_feature_select_strategy="default",
                num_additional_image_tokens=1),
            "<image>", 14),
        Family(
            "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct (min_pixels 3136, max_pixels 12845056)",
            lambda: t.Qwen2_5_VLConfig(vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128,
                                                      "out_hidden_size": 128, "patch_size": 14}),
            lambda b: t.Qwen2_5_VLProcessor(
                image_processor=_image_processor("Qwen2VLImageProcessor", b, min_pixels=3136, max_pixels=12845056),
                tokenizer=tok({"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}),
                video_processor=t.Qwen2VLVideoProcessor()),
            "<|vision_start|><|image_pad|><|vision_end|>", 14),
        Family(
            "llava_next", "llava-hf/llava-v1.6-mistral-7b-hf (CLIP 336/14, five grid pinpoints)",
            lambda: t.LlavaNextConfig(),
            lambda b: t.LlavaNextProcessor(
                image_processor=_image_processor("LlavaNextImageProcessor", b, size={"shortest_edge": 336},
                                                 crop_size={"height": 336, "width": 336}),
                tokenizer=tok({"image_token": "<image>"}), patch_size=14, vision_feature_select_strategy="default",
                num_additional_image_tokens=1),
            "<image>", 14),
        Family(
            "llava_onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf (SigLIP 384/14, anyres_max_9)",
            lambda: t.LlavaOnevisionConfig(),
            lambda b: t.LlavaOnevisionProcessor(
                image_processor=_image_processor("LlavaOnevisionImageProcessor", b,
                                                 image_grid_pinpoints=onevision_pinpoints),
                tokenizer=tok({"image_token": "<image>", "video_token": "<video>"}),
                video_processor=t.LlavaOnevisionVideoProcessor(), num_image_tokens=729,
                vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9"),
            "<image>", 14),
        Family(
            "idefics3", "HuggingFaceM4/Idefics3-8B-Llama3 (364 tiles, longest edge 1456, 169 tokens a tile)",
            lambda: t.Idefics3Config(vision_config={"image_size": 364, "patch_size": 14, "hidden_size": 1152,
                                                    "num_hidden_layers": 2, "intermediate_size": 256}),
            lambda b: t.Idefics3Processor(
                image_processor=_image_processor("Idefics3ImageProcessor", b, size={"longest_edge": 1456},
                                                 max_image_size={"longest_edge": 364}),
                tokenizer=tok({"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                               "global_image_token": "<global-img>"}),
                image_seq_len=169),
            "<image>", 14),
        Family(
            "internvl", "OpenGVLab/InternVL3-1B-hf (448 tiles, 1..12 + thumbnail, 256 tokens a tile)",
            lambda: t.InternVLConfig(),
            lambda b: t.InternVLProcessor(
                image_processor=_image_processor("GotOcr2ImageProcessor", b, crop_to_patches=True, min_patches=1,
                                                 max_patches=12, size={"height": 448, "width": 448}),
                tokenizer=tok({"image_token": "<IMG_CONTEXT>", "start_image_token": "<img>",
                               "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                               "video_token": "<video>"}),
                video_processor=t.InternVLVideoProcessor(), image_seq_length=256),
            "<IMG_CONTEXT>", 14),
        Family(
            "mllama", "meta-llama/Llama-3.2-11B-Vision (560 tiles, at most 4)",
            lambda: t.MllamaConfig(vision_config={"image_size": 560, "patch_size": 14, "max_num_tiles": 4}),
            lambda b: t.MllamaProcessor(
                image_processor=_image_processor("MllamaImageProcessor", b, size={"height": 560, "width": 560},
                                                 max_image_tiles=4),
                tokenizer=tok({"image_token": "<|image|>"})),
            "<|image|>", 14),
        Family(
            "pixtral", "mistral-community/pixtral-12b (16-px patches, longest edge 1024)",
            lambda: t.LlavaConfig(vision_config={"model_type": "pixtral", "image_size": 1024, "patch_size": 16,
                                                 "hidden_size": 64, "num_hidden_layers": 2,
                                                 "intermediate_size": 128}),
            lambda b: t.PixtralProcessor(
                image_processor=_image_processor("PixtralImageProcessor", b, size={"longest_edge": 1024},
                                                 patch_size=16),
                tokenizer=tok({"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]",
                               "image_end_token": "[IMG_END]"}),
                patch_size=16),
            "[IMG]", 16),
        Family(
            "mistral3", "mistralai/Mistral-Small-3.1-24B-Instruct-2503 (14-px patches merged 2 x 2, longest edge 1540)",
            lambda: t.Mistral3Config(vision_config={"image_size": 1540, "patch_size": 14, "hidden_size": 64,
                                                    "num_hidden_layers": 2, "intermediate_size": 128}),
            lambda b: t.PixtralProcessor(
                image_processor=_image_processor("PixtralImageProcessor", b, size={"longest_edge": 1540},
                                                 patch_size=14),
                tokenizer=tok({"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]",
                               "image_end_token": "[IMG_END]"}),
                patch_size=14, spatial_merge_size=2),
            "[IMG]", 14),
        Family(
            "gemma3", "google/gemma-3-4b-it (SigLIP 896/14, 256 soft tokens, pan-and-scan off)",
            lambda: t.Gemma3Config(vision_config={"image_size": 896, "patch_size": 14, "hidden_size": 64,
                                                  "num_hidden_layers": 2, "intermediate_size": 128}),
            lambda b: t.Gemma3Processor(
                image_processor=_image_processor("Gemma3ImageProcessor", b, size={"height": 896, "width": 896}),
                tokenizer=tok({"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                               "eoi_token": "<end_of_image>"}),
                image_seq_length=256),
            "<start_of_image>", 14),
    ]
    return {f.name: f for f in out}


def synthetic_image(width: int, height: int, seed: int = 0):
    """Uniform random pixels (the worst case for decoding; processors do the same work on any content)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed + width * 7919 + height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def tiles_and_patches(family: str, out: Any, patch_size: int) -> tuple[int, int]:
    """(encoder inputs, encoder patches) of one processed image, read from the processor's outputs."""
    if family in ("qwen2_5_vl", "qwen2_vl"):
        return 1, int(out["image_grid_thw"][0].prod())
    if family in ("pixtral", "mistral3"):
        height, width = (int(v) for v in out["image_sizes"][0])
        return 1, (height // patch_size) * (width // patch_size)
    if family == "mllama":
        tiles = int(out["aspect_ratio_mask"].sum())
        side = out["pixel_values"].shape[-1] // patch_size
        return tiles, tiles * (side * side + 1)  # + CLS per tile
    pv = out["pixel_values"]
    tiles = int(pv.shape[0] if family in ("internvl", "gemma3", "llava") else pv.shape[1])
    return tiles, tiles * (pv.shape[-2] // patch_size) * (pv.shape[-1] // patch_size)
