"""Tiny Idefics3 (SmolVLM-Instruct layout): SigLIP-style `model.vision_model.*`, pixel-shuffle connector
`model.connector.modality_projection.proj`, Llama text model `model.text_model.*`, untied `lm_head`.

The processor splits an image into tiles of the vision tower's size plus a global view, and writes
`<fake_token_around_image><row_i_col_j><image>...` per tile, as SmolVLM does.
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

# SmolVLM-Instruct's chat template.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
            "<end_of_utterance>", "<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
TOKENIZER = TokenizerSpec(specials=SPECIALS, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
                          unk="<|endoftext|>", extra_special={"image_token": "<image>"})

TILE = 56  # vision image size: 4x4 patches of 14 px, pixel-shuffled by 2 -> 4 tokens per tile
PATCH = 14
SCALE = 2
MAX_TILES_EDGE = 2  # up to 2x2 tiles + the global view (real SmolVLM: 4x4 of 384 px)


def build_idefics3(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    (image_id,) = ids(tokenizer, "<image>")
    text = LlamaConfig(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS, rope_parameters={"rope_type": "default", "rope_theta": 273_768.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    vision = Idefics3VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=TILE, patch_size=PATCH)
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=SCALE, image_token_id=image_id,
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    image_processor = Idefics3ImageProcessor(size={"longest_edge": MAX_TILES_EDGE * TILE},
                                             max_image_size={"longest_edge": TILE}, do_image_splitting=True)
    image_seq_len = (TILE // PATCH) ** 2 // SCALE**2
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len,
                      chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": False}
