"""Tiny Mistral3 (Mistral-Small-3.1-24B-Instruct-2503, transformers format): Pixtral vision tower
`vision_tower.transformer.layers.*` with 2-D rotary attention, a projector with RMSNorm and a 2x2 patch merger
(`multi_modal_projector.patch_merger.merging_layer`), Mistral text model `language_model.model.*`, untied
`language_model.lm_head`.

Tokenizer: byte-level BPE (Tekken is byte-level) with Tekken's first special tokens in their ids (`[IMG]` = 10,
`[IMG_BREAK]` = 12, `[IMG_END]` = 13); the processor writes one `[IMG]` per merged patch, `[IMG_BREAK]` after each
row and `[IMG_END]` at the end.
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    HEAD_DIM,
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

DEFAULT_SYSTEM = "You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI."
# Mistral-Small-3.1's template without its date line: system prompt block, [INST] turns, [IMG] per image.
CHAT_TEMPLATE = (
    "{%- set default_system_message = '" + DEFAULT_SYSTEM + "' %}"
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_message = default_system_message %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' }}{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}"
    "{%- else %}{{- raise_exception('Only text and image blocks are supported in message content!') }}"
    "{%- endif %}{%- endfor %}{{- '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'system' %}"
    "{%- if message['content'] is string %}{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{%- else %}{{- '[SYSTEM_PROMPT]' + message['content'][0]['text'] + '[/SYSTEM_PROMPT]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- message['content'][0]['text'] + eos_token }}{%- endif %}"
    "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported!') }}{%- endif %}"
    "{%- endfor %}"
)

SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
            "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")
TOKENIZER = TokenizerSpec(specials=SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>",
                          extra_special={"image_token": "[IMG]"})

PATCH = 14
MERGE = 2
LONGEST_EDGE = 112  # 8x8 patches at most, merged 2x2: up to 4 rows of 4 [IMG] (real: 1540 px)


def build_mistral3(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    (image_id,) = ids(tokenizer, "[IMG]")
    text = MistralConfig(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        head_dim=HEAD_DIM, max_position_embeddings=MAX_POSITIONS, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000_000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    vision = PixtralVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                                 head_dim=64, image_size=LONGEST_EDGE, patch_size=PATCH)
    config = Mistral3Config(text_config=text, vision_config=vision, image_token_index=image_id,
                            spatial_merge_size=MERGE, multimodal_projector_bias=False, vision_feature_layer=-1,
                            tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    image_processor = PixtralImageProcessor(size={"longest_edge": LONGEST_EDGE},
                                            patch_size={"height": PATCH, "width": PATCH})
    PixtralProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                     spatial_merge_size=MERGE, chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": False}
