"""Tiny LLaVA-OneVision (llava-onevision-qwen2-*-ov-hf layout): SigLIP `vision_tower.vision_model.*`, a two-layer
projector `multi_modal_projector.linear_{1,2}`, `image_newline`, Qwen2 text model `language_model.model.*`, untied
`language_model.lm_head`.

The processor tiles an image on an "anyres_max_9" grid of the vision tower's size (plus the base view), so the
number of image tokens depends on the image's size and aspect ratio, as it does in the real model.
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
    prefix_rename,
    rename_checkpoint_keys,
    save_model,
    train_tokenizer,
)

# llava-onevision-qwen2-ov-hf's template: images, then videos, then text, per turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% if message['content'] is string %}{{ '\n' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% endif %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
TOKENIZER = TokenizerSpec(specials=SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          extra_special={"image_token": "<image>", "video_token": "<video>"})

TILE = 56  # SigLIP image size; 4x4 patches of 14 px per tile (real: 384 px, 27x27)
PATCH = 14
# up to 2x2 tiles of 56 px (real: up to 6x6 of 384 px); the base view comes on top
GRID_PINPOINTS = [[TILE * rows, TILE * cols] for rows in range(1, 3) for cols in range(1, 3)]


def build_llava_onevision(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    image_id, video_id = ids(tokenizer, "<image>", "<video>")
    text = Qwen2Config(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                image_size=TILE, patch_size=PATCH, vision_use_head=False)
    config = LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=image_id,
                                  video_token_index=video_id, image_grid_pinpoints=GRID_PINPOINTS,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    rename_checkpoint_keys(folder, prefix_rename("vision_tower.", "vision_tower.vision_model."))
    image_processor = LlavaOnevisionImageProcessor(size={"height": TILE, "width": TILE},
                                                   image_grid_pinpoints=GRID_PINPOINTS)
    video_processor = LlavaOnevisionVideoProcessor(size={"height": TILE, "width": TILE})
    num_image_tokens = (TILE // PATCH) ** 2
    LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            num_image_tokens=num_image_tokens, vision_feature_select_strategy="full",
                            chat_template=CHAT_TEMPLATE, vision_aspect_ratio="anyres_max_9").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": False}
