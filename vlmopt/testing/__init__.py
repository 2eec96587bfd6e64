"""Test fixtures that are also used by `vlmopt demo`: a tiny offline VLM and synthetic images."""

from .tiny_vlm import TinyVlmSpec, build_tiny_vlm

__all__ = ["TinyVlmSpec", "build_tiny_vlm"]
