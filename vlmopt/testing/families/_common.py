"""Pieces every tiny family checkpoint shares: a trained tokenizer with the real model's special tokens, the
text-model sizes, safetensors key renaming, and an atomic write of the whole folder.

Sizes (docs/quantize.md#tiny-checkpoints): text head_dim 64 (vLLM's CPU attention accepts head sizes 32, 64, 80, 96,
112, 128, ...), every text Linear a multiple of 128 wide (W4A16 groups of 128), two decoder layers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..tiny_vlm import _WORDS

TEXT_VOCAB = 1024  # trained BPE entries; special tokens come on top
TEXT_HIDDEN = 256
TEXT_INTERMEDIATE = 512
TEXT_LAYERS = 2
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
HEAD_DIM = TEXT_HIDDEN // TEXT_HEADS  # 64
MAX_POSITIONS = 4096


@dataclass(frozen=True)
class TokenizerSpec:
    """Special tokens as the real model's tokenizer has them, and the roles the chat template and engine use."""

    specials: Sequence[str]
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None = None
    # Plain (non-special) vocabulary entries the engine looks up as single tokens (Gemma 3: "\n\n").
    plain_entries: Sequence[str] = ()
    style: Literal["byte_level", "sentencepiece"] = "byte_level"
    extra_special: dict[str, str] | None = None  # e.g. {"image_token": "<|image_pad|>"}
    add_bos: bool = False
    # Specials that sit after the text vocabulary (Mllama's `<|image|>` = 128256 = the text vocab size).
    late_specials: Sequence[str] = ()


def _corpus(seed: int, n_sentences: int = 3000) -> list[str]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + rng.choice([".", "?", "!", ",", ":"]))
    return sentences


def train_tokenizer(spec: TokenizerSpec, chat_template: str, seed: int = 0,
                    model_max_length: int = MAX_POSITIONS) -> Any:
    """A BPE trained on generated sentences, with `spec`'s specials, wrapped in `PreTrainedTokenizerFast`.

    `byte_level` is the GPT-2 style of Qwen, Llama 3, Mistral's Tekken and SmolVLM; `sentencepiece` is the
    `▁`-space, byte-fallback style of Gemma, where "\\n" runs are literal vocabulary entries.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if spec.style == "byte_level":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token=spec.unk, byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        # byte-fallback pieces <0x00>..<0xFF> exist in every SentencePiece vocabulary of this kind
        alphabet = []
    byte_pieces = [f"<0x{i:02X}>" for i in range(256)] if spec.style == "sentencepiece" else []
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB + len(spec.specials) + len(byte_pieces),
        special_tokens=[*spec.specials, *byte_pieces],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    if spec.plain_entries:
        tok.add_tokens([AddedToken(entry, normalized=False, special=False) for entry in spec.plain_entries])
    if spec.late_specials:
        tok.add_special_tokens([AddedToken(entry, normalized=False, special=True) for entry in spec.late_specials])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        unk_token=spec.unk,
        extra_special_tokens=dict(spec.extra_special or {}),
        model_max_length=model_max_length,
    )
    fast.add_bos_token = spec.add_bos
    fast.chat_template = chat_template
    if spec.add_bos and spec.bos:
        from tokenizers import processors

        tok = fast.backend_tokenizer
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B",
            special_tokens=[(spec.bos, fast.convert_tokens_to_ids(spec.bos))])
    return fast


def padded_vocab(tokenizer: Any, multiple: int = 64) -> int:
    """The embedding size: the tokenizer's length rounded up, as real checkpoints pad their vocabularies."""
    return -(-len(tokenizer) // multiple) * multiple


def ids(tokenizer: Any, *tokens: str) -> list[int]:
    out = tokenizer.convert_tokens_to_ids(list(tokens))
    unknown = [t for t, i in zip(tokens, out, strict=True) if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"tokens missing from the tiny vocabulary: {unknown}")
    return out


KeyRename = Callable[[str], str]


def rename_checkpoint_keys(folder: Path, rename: KeyRename) -> None:
    """Rewrite the saved safetensors with `rename` applied to every key (and the shard index, if any)."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        renamed = {rename(k): v.contiguous() for k, v in tensors.items()}
        if len(renamed) != len(tensors):
            raise ValueError(f"key renaming collapsed tensors in {shard.name}")
        save_file(renamed, shard, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))


def prefix_rename(old: str, new: str) -> KeyRename:
    """`old...` -> `new...` unless the key already starts with `new`."""

    def rename(key: str) -> str:
        if key.startswith(old) and not key.startswith(new):
            return new + key[len(old):]
        return key

    return rename


def chain(*renames: KeyRename) -> KeyRename:
    def rename(key: str) -> str:
        for step in renames:
            key = step(key)
        return key

    return rename


def save_model(model: Any, folder: Path, tokenizer: Any, seed: int) -> None:
    """bf16 weights with generation specials taken from the tokenizer."""
    import torch

    model = model.to(torch.bfloat16).eval()
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)


def write_meta(folder: Path, family: str, builder: str, seed: int, **extra: Any) -> None:
    (folder / "vlmopt_tiny.json").write_text(json.dumps({"family": family, "builder": builder, "seed": seed, **extra},
                                                        indent=2))
