"""One tiny offline checkpoint per VLM family vlmopt has rules for (vlmopt/quantize/ignore_rules.py).

Each is built from the real transformers config, model and processor classes, with random weights, saved in the
weight layout of the family's hub checkpoints (the names vLLM's loader expects), with the real model's chat template
format and tokenizer special tokens, over a small BPE vocabulary trained offline. See docs/quantize.md#tiny-checkpoints.

    from vlmopt.testing.families import FAMILY_NAMES, build_tiny_family
    path = build_tiny_family("gemma3", "/tmp/models/tiny-gemma3")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyFamily:
    """A family's tiny checkpoint: which real architecture it reproduces and where its builder lives."""

    name: str
    architecture: str
    model_type: str
    rules_family: str  # the ArchitectureFamily name in vlmopt/quantize/ignore_rules.py
    builder: str  # "module:function"; imported lazily (transformers is heavy)
    tied_embeddings: bool = False
    like: str = ""  # the public model whose layout it copies

    def builder_function(self) -> Callable[[Path, int], dict]:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module, __name__), function)


FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily("llava", "LlavaForConditionalGeneration", "llava", "llava", ".llava:build_llava",
               like="llava-hf/llava-1.5-7b-hf"),
    TinyFamily("llava-onevision", "LlavaOnevisionForConditionalGeneration", "llava_onevision", "llava",
               ".llava_onevision:build_llava_onevision", like="llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    TinyFamily("qwen2-vl", "Qwen2VLForConditionalGeneration", "qwen2_vl", "qwen-vl", ".qwen_vl:build_qwen2_vl",
               like="Qwen/Qwen2-VL-7B-Instruct"),
    TinyFamily("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", "qwen-vl",
               ".qwen_vl:build_qwen2_5_vl", tied_embeddings=True, like="Qwen/Qwen2.5-VL-3B-Instruct"),
    TinyFamily("gemma3", "Gemma3ForConditionalGeneration", "gemma3", "gemma3", ".gemma3:build_gemma3",
               tied_embeddings=True, like="google/gemma-3-4b-it"),
    TinyFamily("idefics3", "Idefics3ForConditionalGeneration", "idefics3", "idefics3", ".idefics3:build_idefics3",
               like="HuggingFaceTB/SmolVLM-Instruct"),
    TinyFamily("mistral3", "Mistral3ForConditionalGeneration", "mistral3", "mistral3", ".mistral3:build_mistral3",
               like="mistralai/Mistral-Small-3.1-24B-Instruct-2503"),
    TinyFamily("mllama", "MllamaForConditionalGeneration", "mllama", "mllama", ".mllama:build_mllama",
               like="meta-llama/Llama-3.2-11B-Vision-Instruct"),
    TinyFamily("internvl", "InternVLForConditionalGeneration", "internvl", "internvl", ".internvl:build_internvl",
               like="OpenGVLab/InternVL3-1B-hf"),
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)


class UnknownFamily(ValueError):
    pass


def family(name: str) -> TinyFamily:
    for candidate in FAMILIES:
        if candidate.name == name:
            return candidate
    raise UnknownFamily(f"unknown tiny family {name!r}; choose from {', '.join(FAMILY_NAMES)}")


def build_tiny_family(name: str, out_dir: Path | str, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny `name` checkpoint (bf16 safetensors, tokenizer, processor, chat template) to `out_dir`.

    Deterministic for `seed`; written to a temporary sibling folder and renamed, so an interrupted build leaves no
    half model. An existing built folder is reused unless `overwrite`.
    """
    from vlmopt.atomic import atomic_folder

    from ..tiny_vlm import TINY_MARKER
    from ._common import write_meta

    entry = family(name)
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / "config.json").exists():
        return out_dir
    # The marker written by write_meta lets a later --overwrite replace this folder, and nothing else.
    with atomic_folder(out_dir, (TINY_MARKER,), "tiny model folder") as tmp:
        extra = entry.builder_function()(tmp, seed)
        write_meta(tmp, entry.name, entry.builder, seed, architecture=entry.architecture, like=entry.like, **extra)
    return out_dir


__all__ = ["FAMILIES", "FAMILY_NAMES", "TinyFamily", "UnknownFamily", "build_tiny_family", "family"]
