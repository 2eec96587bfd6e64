"""Which modules stay in bf16, per architecture family.

The vision tower, the projector and `lm_head` are never quantized, as in llm-compressor's VLM examples
(examples/multimodal_vision): vLLM cannot load a quantized `lm_head`
(https://github.com/vllm-project/llm-compressor/issues/1820) and GPTQ over a vision tower fails opaquely with "No
statistics available". Module names are transformers 5 in-memory names (`model.vision_tower.*`, `model.visual.*`,
...); the patterns are written loosely (`.*vision_tower.*`) so that they also match the checkpoint (hub) names that
llm-compressor writes into the saved `ignore` list, which `verify.py` reads back.

An architecture this table does not know is refused: quantizing it blindly could quantize its vision tower. The user
can name the modules to keep with `--ignore`, which then replaces the family's rules entirely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import QuantizeInputError

# Decoder layers of the language model inside a VLM (transformers 5 names: `model.language_model.layers.3.`,
# Idefics3/SmolVLM: `model.text_model.layers.3.`); also matches the checkpoint form `language_model.model.layers.3.`.
VLM_TEXT_LAYERS = r".*(language_model|text_model)\.(model\.)?layers\.\d+\."
TEXT_ONLY_LAYERS = r"(model\.)?layers\.\d+\."


@dataclass(frozen=True)
class ArchitectureFamily:
    """How one family of models is laid out: what to keep in bf16 and where the text decoder layers are."""

    name: str
    model_types: tuple[str, ...]
    vision_patterns: tuple[str, ...]
    projector_patterns: tuple[str, ...]
    text_layers_regex: str = VLM_TEXT_LAYERS
    is_vlm: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def keep_patterns(self) -> tuple[str, ...]:
        """llm-compressor `ignore` entries: `lm_head` plus `re:` regexes of the vision tower and projector."""
        return ("lm_head", "re:.*lm_head$", *(f"re:{p}" for p in (*self.vision_patterns, *self.projector_patterns)))


# One entry per family (each exercised by a tiny checkpoint of vlmopt.testing.families); patterns from llm-compressor's
# own VLM examples and transformers 5 module names.
FAMILIES: tuple[ArchitectureFamily, ...] = (
    ArchitectureFamily(
        name="llava",
        model_types=("llava", "llava_next", "llava_onevision", "llava_next_video", "vipllava"),
        vision_patterns=(r".*vision_tower.*",),
        projector_patterns=(r".*multi_modal_projector.*",),
    ),
    ArchitectureFamily(
        name="qwen-vl",
        model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"),
        # transformers >= 4.52 renamed `visual.*` to `model.visual.*`; the merger (projector) lives inside `visual`
        # (https://github.com/vllm-project/llm-compressor/pull/1545).
        vision_patterns=(r".*visual.*",),
        projector_patterns=(r".*visual\.merger.*",),
    ),
    ArchitectureFamily(
        name="gemma3",
        model_types=("gemma3",),
        vision_patterns=(r".*vision_tower.*",),
        projector_patterns=(r".*multi_modal_projector.*",),
    ),
    ArchitectureFamily(
        name="idefics3",
        model_types=("idefics3", "smolvlm"),
        vision_patterns=(r".*vision_model.*",),
        projector_patterns=(r".*connector.*",),
    ),
    ArchitectureFamily(
        name="mistral3",
        model_types=("mistral3", "pixtral"),
        vision_patterns=(r".*vision_tower.*",),
        projector_patterns=(r".*multi_modal_projector.*",),
    ),
    ArchitectureFamily(
        name="mllama",
        model_types=("mllama",),
        vision_patterns=(r".*vision_model.*",),
        projector_patterns=(r".*multi_modal_projector.*",),
        notes=("cross-attention layers of the text model are quantized like the self-attention ones",),
    ),
    ArchitectureFamily(
        name="internvl",
        model_types=("internvl", "internvl_chat"),
        vision_patterns=(r".*vision_tower.*", r".*vision_model.*"),
        projector_patterns=(r".*multi_modal_projector.*", r".*mlp1.*"),
    ),
)

# Text-only decoders: quantized with `lm_head` kept, and the user is told the vision rules did not apply.
TEXT_ONLY = ArchitectureFamily(
    name="text-only",
    model_types=(),
    vision_patterns=(),
    projector_patterns=(),
    text_layers_regex=TEXT_ONLY_LAYERS,
    is_vlm=False,
)

# Config keys whose presence means "this model has a vision (or other non-text) encoder".
_VISION_CONFIG_KEYS = ("vision_config", "visual", "vision_tower", "mm_vision_tower", "image_token_id",
                       "image_token_index")


def family_for(model_type: str) -> ArchitectureFamily | None:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def looks_multimodal(config: Mapping[str, Any]) -> bool:
    return any(key in config for key in _VISION_CONFIG_KEYS)


@dataclass(frozen=True)
class IgnorePlan:
    """The resolved rules for one model: what llm-compressor must leave alone, and what verification checks."""

    family: ArchitectureFamily
    ignore: tuple[str, ...]
    user_override: bool
    warnings: tuple[str, ...] = ()

    @property
    def vision_rules_applied(self) -> bool:
        return self.family.is_vlm and not self.user_override

    def describe(self) -> str:
        if self.user_override:
            return "user --ignore: " + ", ".join(self.ignore)
        return f"family {self.family.name}: " + ", ".join(self.ignore)


def resolve_ignore(config: Mapping[str, Any], user_ignore: Iterable[str] | None = None) -> IgnorePlan:
    """Pick the family rules for a config.json, or the user's `--ignore` list, which replaces them."""
    model_type = str(config.get("model_type", ""))
    architecture = (config.get("architectures") or ["?"])[0]
    family = family_for(model_type)
    user = tuple(user_ignore or ())
    for pattern in user:
        _check_pattern(pattern)
    if family is None:
        if looks_multimodal(config):
            if not user:
                raise QuantizeInputError(
                    f"unknown multimodal architecture {architecture} (model_type {model_type!r}): vlmopt has no rule "
                    "for which modules are its vision tower and projector; name the modules to keep in bf16 with "
                    "--ignore (e.g. --ignore lm_head --ignore 're:.*vision.*'), or add a family to "
                    "vlmopt/quantize/ignore_rules.py"
                )
            family = ArchitectureFamily(name=f"user:{model_type}", model_types=(model_type,), vision_patterns=(),
                                        projector_patterns=())
        else:
            family = TEXT_ONLY
    warnings: list[str] = []
    if not family.is_vlm:
        warnings.append(f"{architecture} is a text-only model: the vision rules did not apply (only lm_head is kept)")
    if user:
        if family.is_vlm and family.vision_patterns:
            warnings.append("--ignore replaces the vision rules of family "
                            f"{family.name}; the vision tower is quantized unless a pattern keeps it")
        return IgnorePlan(family=family, ignore=user, user_override=True, warnings=tuple(warnings))
    return IgnorePlan(family=family, ignore=family.keep_patterns, user_override=False, warnings=tuple(warnings))


def _check_pattern(pattern: str) -> None:
    if not pattern.strip():
        raise QuantizeInputError("--ignore: empty pattern")
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise QuantizeInputError(f"--ignore {pattern!r}: not a valid regular expression: {exc}") from exc


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """llm-compressor's ignore semantics for names: `re:` entries are regexes (re.match), others exact names."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.match(pattern[3:], name):
                return True
        elif name == pattern:
            return True
    return False


def vision_patterns(family: ArchitectureFamily) -> tuple[str, ...]:
    """Regexes (without `re:`) of everything that must stay byte-identical: vision tower and projector."""
    return (*family.vision_patterns, *family.projector_patterns)
