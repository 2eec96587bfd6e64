"""The one CPU workaround llm-compressor 0.14.0.1 needs (research/quantization.md §6.2, SETUP.md).

AWQ's smoothing step calls `IntermediatesCache.pin_memory()`, which calls `Tensor.pin_memory()`; with no accelerator
that raises "Cannot access accelerator device when none is available". Pinned memory only speeds up host-to-device
copies, which do not exist on a CPU-only machine, so making that one method a no-op changes no result. The patch is
applied only when no accelerator exists, only for the duration of a run, and is undone afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def accelerator_available() -> bool:
    import torch

    return bool(torch.accelerator.is_available())


@contextmanager
def awq_pin_memory_workaround() -> Iterator[bool]:
    """Yields True when the patch is active."""
    if accelerator_available():
        yield False
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.__dict__.get("pin_memory")

    def _no_pin(self, *args, **kwargs):  # same signature as the method it replaces
        return None

    IntermediatesCache.pin_memory = _no_pin
    try:
        yield True
    finally:
        if original is None:
            del IntermediatesCache.pin_memory
        else:
            IntermediatesCache.pin_memory = original
