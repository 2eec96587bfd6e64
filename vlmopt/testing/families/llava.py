"""The tiny LLaVA-1.5 of vlmopt.testing.tiny_vlm, as a family entry."""

from __future__ import annotations

from pathlib import Path


def build_llava(folder: Path, seed: int) -> dict:
    from ..tiny_vlm import TinyVlmSpec, build_tiny_vlm

    spec = TinyVlmSpec(seed=seed)
    build_tiny_vlm(folder, spec)
    return {"tied_embeddings": False, "image_tokens": spec.image_tokens, "spec": spec.__dict__}
