"""Tiny Qwen2-VL (7B-like: untied lm_head) and Qwen2.5-VL (3B-like: lm_head tied to the input embeddings).

Hub layout: `model.layers.*`, `model.embed_tokens`, `lm_head` and `visual.*` (merger = projector inside `visual`);
transformers 5 saves exactly that. mrope_section [8, 12, 12] splits the 32 rotary frequencies of head_dim 64 into
temporal / height / width parts as the real models do for head_dim 128 ([16, 24, 24]).
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    MAX_POSITIONS,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_KV_HEADS,
    TEXT_LAYERS,
    TokenizerSpec,
    ids,
    padded_vocab,
    save_model,
    train_tokenizer,
    write_meta,
)

# Qwen2-VL-7B-Instruct's chat template (default system prompt, vision placeholders per image / video).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's added tokens in their hub order (ids 151643...), vision ones included.
SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
TOKENIZER = TokenizerSpec(specials=SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          extra_special={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                         "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"})

PATCH = 14
MERGE = 2
# 56x56 -> a 4x4 patch grid -> 4 image tokens; up to 224x224 (64 tokens) keeps prompts short on a CPU.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224
MROPE_SECTION = [8, 12, 12]


def _processor(tokenizer, version: str):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH,
                                            merge_size=MERGE, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH,
                                            merge_size=MERGE, temporal_patch_size=2)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


def build(folder: Path, seed: int, version: str) -> dict:
    """`version` is "2" (Qwen2-VL) or "2.5" (Qwen2.5-VL)."""
    import torch

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    image_id, video_id, start_id, end_id = ids(tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                               "<|vision_end|>")
    tied = version == "2.5"
    text = dict(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-6, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": MROPE_SECTION},
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(depth=2, embed_dim=64, hidden_size=TEXT_HIDDEN, mlp_ratio=2, num_heads=2, patch_size=PATCH,
                      spatial_merge_size=MERGE, temporal_patch_size=2, in_channels=3)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=image_id,
                               video_token_id=video_id, vision_start_token_id=start_id, vision_end_token_id=end_id,
                               tie_word_embeddings=tied)
        model_cls = Qwen2VLForConditionalGeneration
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        # window 56 px = 2x2 merged units, so a 112x112 image already has several windows; block 1 is global
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=TEXT_HIDDEN,
                      patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1], hidden_act="silu", in_channels=3)
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=image_id,
                                  video_token_id=video_id, vision_start_token_id=start_id,
                                  vision_end_token_id=end_id, tie_word_embeddings=tied)
        model_cls = Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    model = model_cls(config)
    save_model(model, folder, tokenizer, seed)
    _processor(tokenizer, version).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": tied}


def build_qwen2_vl(folder: Path, seed: int) -> dict:
    return build(folder, seed, "2")


def build_qwen2_5_vl(folder: Path, seed: int) -> dict:
    return build(folder, seed, "2.5")


__all__ = ["build_qwen2_5_vl", "build_qwen2_vl", "write_meta"]
