"""Bytes a variant will take on disk, estimated from the bf16 checkpoint's safetensors header before any work is
done, so that a run that cannot fit is refused up front (bytes per parameter of compressed-tensors'
packed formats, https://github.com/vllm-project/compressed-tensors).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .ignore_rules import matches_any
from .recipes import MethodSpec
from .safetensors_index import TensorEntry


def quantized_weight_bytes(out_features: int, in_features: int, spec: MethodSpec) -> int:
    """Packed weight + bf16 scales (+ int zero points for the asymmetric scheme)."""
    if spec.group_size is None:  # per-channel 8-bit: one byte per weight, one bf16 scale per output row
        return out_features * in_features + 2 * out_features
    groups = -(-in_features // spec.group_size)
    packed = out_features * in_features * spec.weight_bits // 8
    scales = 2 * out_features * groups
    zero_points = 4 * (-(-out_features * spec.weight_bits // 32)) * groups if spec.scheme.endswith("ASYM") else 0
    return packed + scales + zero_points


def estimate_variant_bytes(tensors: Mapping[str, TensorEntry], spec: MethodSpec, text_layers_regex: str,
                           ignore: Iterable[str]) -> int:
    """2-D `.weight` tensors inside the text decoder layers that the ignore rules do not keep are counted at the
    quantized size; everything else at its current size."""
    ignore = list(ignore)
    total = 0
    for name, entry in tensors.items():
        module = name.removesuffix(".weight")
        if (name.endswith(".weight") and len(entry.shape) == 2 and re.match(text_layers_regex, name)
                and not matches_any(module, ignore)):
            total += quantized_weight_bytes(entry.shape[0], entry.shape[1], spec)
        else:
            total += entry.nbytes
    return total
