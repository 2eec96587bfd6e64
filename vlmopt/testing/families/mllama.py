"""Tiny Mllama (Llama-3.2-11B-Vision-Instruct layout): tiled vision model `vision_model.*` with local and global
transformers and gated positional embeddings, `multi_modal_projector`, and a Llama text model `language_model.model.*`
whose cross-attention layers read the image (layer 1 here; layers 3, 8, 13, ... in the real model), untied
`language_model.lm_head`.

The prompt carries a single `<|image|>` token per image (id = the text vocabulary size, as 128256 is in the real
tokenizer); the image reaches the text model through cross-attention, not as prompt tokens.
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    MAX_POSITIONS,
    TEXT_HEADS,
    TEXT_HIDDEN,
    TEXT_INTERMEDIATE,
    TEXT_KV_HEADS,
    TokenizerSpec,
    ids,
    save_model,
    train_tokenizer,
)

# Llama 3.2 Vision Instruct's header/turn format (its template also writes a dated system block; left out).
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
            "<|eot_id|>", "<|python_tag|>")
TOKENIZER = TokenizerSpec(specials=SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>",
                          pad="<|finetune_right_pad_id|>", late_specials=("<|image|>",), add_bos=True)

TILE = 56  # 4x4 patches of 14 px per tile (+ a class token), up to 4 tiles (real: 560 px tiles)
PATCH = 14


def build_mllama(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    (image_id,) = ids(tokenizer, "<|image|>")
    text = MllamaTextConfig(
        vocab_size=image_id, hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE, num_hidden_layers=2,
        num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS, cross_attention_layers=[1],
        max_position_embeddings=MAX_POSITIONS, rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    vision = MllamaVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_global_layers=1,
                                attention_heads=2, image_size=TILE, patch_size=PATCH, max_num_tiles=4,
                                intermediate_layers_indices=[0], vision_output_dim=128)
    config = MllamaConfig(text_config=text, vision_config=vision, image_token_index=image_id)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    image_processor = MllamaImageProcessor(size={"height": TILE, "width": TILE}, max_image_tiles=4)
    MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                    chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": False}
