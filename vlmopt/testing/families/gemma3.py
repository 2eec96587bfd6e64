"""Tiny Gemma 3 (gemma-3-4b-it layout): SigLIP vision tower saved as `vision_tower.vision_model.*`, an average-pool
projector with `mm_input_projection_weight`, a Gemma 3 text model whose `lm_head` is tied to `embed_tokens` (no
`lm_head.weight` in the checkpoint), one sliding-window and one global attention layer.

Tokenizer: SentencePiece-style (`▁` spaces, byte fallback) with Gemma's specials; vLLM's Gemma 3 processor looks up
"\\n", "\\n\\n", "\\n\\n\\n" and "\\n\\n\\n\\n" as single vocabulary entries, as they are in the real vocabulary.
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
    prefix_rename,
    rename_checkpoint_keys,
    save_model,
    train_tokenizer,
)

# gemma-3-4b-it's chat template: the system prompt is folded into the first user turn, `model` is the assistant.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    "{%- else -%}{{ raise_exception(\"Invalid content type\") }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]", "<start_of_turn>", "<end_of_turn>",
            "<start_of_image>", "<end_of_image>", "<image_soft_token>")
TOKENIZER = TokenizerSpec(
    specials=SPECIALS, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", style="sentencepiece", add_bos=True,
    plain_entries=("\n", "\n\n", "\n\n\n", "\n\n\n\n"),
    extra_special={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                   "image_token": "<image_soft_token>"},
)

IMAGE_SIZE = 112  # 8x8 patches of 14 px, average-pooled to 4x4 = 16 image tokens (real: 896 px -> 256 tokens)
PATCH = 14
MM_TOKENS = 16


def build_gemma3(folder: Path, seed: int) -> dict:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer = train_tokenizer(TOKENIZER, CHAT_TEMPLATE, seed=seed)
    boi, eoi, soft = ids(tokenizer, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    text = Gemma3TextConfig(
        vocab_size=padded_vocab(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
        head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, max_position_embeddings=MAX_POSITIONS,
        sliding_window=512, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                image_size=IMAGE_SIZE, patch_size=PATCH, vision_use_head=False)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=MM_TOKENS,
                          boi_token_index=boi, eoi_token_index=eoi, image_token_index=soft, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    save_model(model, folder, tokenizer, seed)
    # Hub layout of SigLIP inside Gemma 3: `vision_tower.vision_model.*` (what vLLM's loader maps).
    rename_checkpoint_keys(folder, prefix_rename("vision_tower.", "vision_tower.vision_model."))
    image_processor = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False)
    Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                    image_seq_length=MM_TOKENS).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"tied_embeddings": True}
