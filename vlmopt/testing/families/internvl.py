"""Tiny InternVL (InternVL3-*-hf layout, transformers' native InternVL): InternViT `vision_tower.*`, a
pixel-shuffle MLP projector `multi_modal_projector.{layer_norm,linear_1,linear_2}`, Qwen2 text model
`language_model.model.*`, untied `language_model.lm_head`.

The processor crops an image into tiles of the vision tower's size plus a thumbnail and writes
`<img><IMG_CONTEXT>...</img>` per image, as InternVL3 does.
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
)

# InternVL3-hf's ChatML template: `<IMG_CONTEXT>\n` per image, which the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>",
            "<ref>", "</ref>", "<box>", "</box>", "<video>")
TOKENIZER = TokenizerSpec(
    specials=SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
    extra_special={"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>"},
)

TILE = 56  # 4x4 patches of 14 px, pixel-shuffled by 0.5 -> 4 tokens per tile (real: 448 px -> 256)
PATCH = 14
MAX_TILES = 4


def build_internvl(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    (image_id,) = ids(tokenizer, "<IMG_CONTEXT>")
    text = Qwen2Config(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    vision = InternVLVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=[TILE, TILE], patch_size=[PATCH, PATCH])
    image_seq_length = (TILE // PATCH) ** 2 // 4
    config = InternVLConfig(text_config=text, vision_config=vision, image_token_id=image_id,
                            image_seq_length=image_seq_length, downsample_ratio=0.5, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    image_processor = GotOcr2ImageProcessor(size={"height": TILE, "width": TILE}, crop_to_patches=True,
                                            min_patches=1, max_patches=MAX_TILES,
                                            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    video_processor = InternVLVideoProcessor(size={"height": TILE, "width": TILE})
    InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                      image_seq_length=image_seq_length, chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": False}
