"""Test fixtures that are also used by `vlmopt demo`: tiny offline VLMs and synthetic images.

`build_tiny_vlm` writes the tiny LLaVA; `build_tiny_family(name, out_dir)` writes one tiny checkpoint of any family
in `FAMILY_NAMES` (llava, llava-onevision, qwen2-vl, qwen2.5-vl, gemma3, idefics3, mistral3, mllama, internvl).
Both import torch and transformers lazily, so importing this package is cheap.
"""

from .families import FAMILIES, FAMILY_NAMES, TinyFamily, UnknownFamily, build_tiny_family
from .tiny_vlm import TinyVlmSpec, build_tiny_vlm

__all__ = ["FAMILIES", "FAMILY_NAMES", "TinyFamily", "TinyVlmSpec", "UnknownFamily", "build_tiny_family",
           "build_tiny_vlm"]
