"""What a loaded model's Linear layers are, which ones a recipe will quantize, and their checkpoint names.

Computed on the bf16 model before `oneshot`, so that verification after save knows exactly which tensors must be
quantized and which must be untouched, and so that group-size problems are named before any work is done.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import QuantizeInputError
from .ignore_rules import IgnorePlan, matches_any, vision_patterns
from .recipes import MethodSpec

Role = Literal["text", "vision", "lm_head", "other"]


@dataclass(frozen=True)
class LinearLayer:
    name: str
    checkpoint_name: str
    in_features: int
    out_features: int
    role: Role
    quantize: bool
    # Checkpoint name (without `.weight`) of the input embedding this Linear shares its weight with: a tied
    # `lm_head` (Gemma 3, Qwen2.5-VL-3B) has no tensor of its own in the checkpoint.
    tied_to: str | None = None


def to_checkpoint_name(model: Any, name: str) -> str:
    """In-memory module name -> the name its weight has in the saved safetensors.

    transformers 5 renames keys on load (LLaVA: `language_model.model.layers` -> `model.language_model.layers`) and
    reverses that on save (the hub layout); apply the same reverse renaming to the `.weight` key.
    """
    conversions = getattr(model, "_weight_conversions", None) or []
    key = f"{name}.weight"
    for reverse in (conv.reverse_transform() for conv in reversed(conversions)):
        rename = getattr(reverse, "rename_source_key", None)
        if rename is None:
            continue
        renamed, matched = rename(key)
        if matched is not None:
            key = renamed
    return key.removesuffix(".weight")


def _embedding_names(model: Any) -> dict[int, str]:
    """id of each Embedding weight -> the module's in-memory name."""
    import torch

    return {id(module.weight): name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Embedding)}


def linear_inventory(model: Any, plan: IgnorePlan) -> list[LinearLayer]:
    import torch

    keep_regexes = vision_patterns(plan.family)
    embeddings = _embedding_names(model)
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if re.match(r"(.*\.)?lm_head$", name):
            role: Role = "lm_head"
        elif any(re.match(p, name) for p in keep_regexes):
            role = "vision"
        elif re.match(plan.family.text_layers_regex, name):
            role = "text"
        else:
            role = "other"
        layers.append(LinearLayer(
            name=name,
            checkpoint_name=to_checkpoint_name(model, name),
            in_features=module.in_features,
            out_features=module.out_features,
            role=role,
            quantize=not matches_any(name, plan.ignore),
            tied_to=to_checkpoint_name(model, embeddings[id(module.weight)]) if id(module.weight) in embeddings
            else None,
        ))
    return layers


def check_group_size(layers: Iterable[LinearLayer], spec: MethodSpec) -> None:
    """Refuse, naming the layer, when a quantized Linear's input size is not a multiple of the group size.

    llm-compressor only flags columns >= group_size; a smaller, non-multiple input
    would give a group that vLLM's kernels cannot use either, so it is refused too.
    """
    if spec.group_size is None:
        return
    for layer in layers:
        if layer.quantize and layer.in_features % spec.group_size:
            raise QuantizeInputError(
                f"layer {layer.name} has in_features={layer.in_features}, not a multiple of the {spec.scheme} "
                f"group size {spec.group_size}: {spec.method} cannot quantize it; keep it in bf16 with "
                f"--ignore {layer.name} (plus the model's other keep rules) or use fp8/int8"
            )


def sequential_targets(model: Any, text_layers_regex: str) -> list[str]:
    """Class names of the text decoder's layers (e.g. `LlamaDecoderLayer`) for `oneshot(sequential_targets=...)`."""
    import torch

    layer_list = re.compile(text_layers_regex.removesuffix(r"\.\d+\.") + "$")
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and layer_list.match(name):
            for child in module:
                names[type(child).__name__] = None
    return list(names)
