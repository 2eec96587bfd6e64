"""One llm-compressor recipe per method (llm-compressor 0.14.0.1 API; its examples/ show each recipe).

fp8  = FP8_DYNAMIC: per-channel FP8 weights, dynamic per-token FP8 activations; data-free.
int8 = W8A8: per-channel int8 weights, dynamic per-token int8 activations; data-free (no static scales to fit).
gptq = GPTQ W4A16: int4 weights in groups of 128, symmetric; needs calibration data.
awq  = AWQ smoothing + W4A16_ASYM: int4 weights in groups of 128 with zero points; needs calibration data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import QuantizeInputError
from .ignore_rules import IgnorePlan


@dataclass(frozen=True)
class MethodSpec:
    method: str
    scheme: str
    needs_calibration: bool
    group_size: int | None
    weight_bits: int
    summary: str

    @property
    def variant_name(self) -> str:
        return self.method


METHODS: dict[str, MethodSpec] = {
    spec.method: spec
    for spec in (
        MethodSpec("fp8", "FP8_DYNAMIC", False, None, 8, "FP8 weights per channel, FP8 activations per token"),
        MethodSpec("int8", "W8A8", False, None, 8, "int8 weights per channel, int8 activations per token"),
        MethodSpec("gptq", "W4A16", True, 128, 4, "GPTQ int4 weights, group 128, symmetric"),
        MethodSpec("awq", "W4A16_ASYM", True, 128, 4, "AWQ-smoothed int4 weights, group 128, with zero points"),
    )
}


def parse_methods(text: str) -> list[MethodSpec]:
    """`awq,gptq,fp8` -> specs, in the order given, duplicates dropped; an unknown name is a user error."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise QuantizeInputError(f"--method: no method given; choose from {', '.join(METHODS)}")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise QuantizeInputError(f"--method: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return [METHODS[name] for name in dict.fromkeys(names)]


def scoped_awq_mappings(architecture: str, text_layers_regex: str) -> list[Any]:
    """AWQ smoothing mappings limited to the text decoder.

    llm-compressor's default mappings (`re:.*q_proj$` ...) also match the vision tower's attention, which breaks
    their resolution on LLaVA ("AWQ needs to match a single smoothlayer") and would smooth - i.e. rewrite - vision
    weights that `ignore` keeps (a layer that is ignored for quantization but matched by a mapping is still smoothed:
    `AWQModifier._apply_smoothing` rescales every matched layer). Each regex is therefore prefixed with the
    text-decoder scope; mappings that are already scoped by the library (Qwen2.5-VL's) are kept as they are.
    """
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY, AWQMapping, default_mappings

    base = AWQ_MAPPING_REGISTRY.get(architecture, default_mappings)

    def scope(pattern: str) -> str:
        if not pattern.startswith("re:"):
            return pattern
        body = pattern[3:]
        if re.search(r"language_model|text_model", body):
            return pattern
        return "re:" + text_layers_regex + ".*" + body.removeprefix("^").removeprefix(".*")

    return [
        AWQMapping(scope(m.smooth_layer), [scope(b) for b in m.balance_layers], m.activation_hook_target)
        for m in base
    ]


# AWQ's grid search replays every smoothed module on every calibration sample once per grid point, so the grid sets
# its pace. llm-compressor's default is 20 points: the identity plus ratios k/18 (k = 0..18). Without an accelerator
# vlmopt uses 11: the identity plus ratios k/9, i.e. every other point of the default grid
# (docs/quantize.md#awq-on-a-cpu has the measurements: AWQ time vs GPTQ's, layer errors and KL/top-1 on both grids).
AWQ_GRID_DEFAULT = 20
AWQ_GRID_CPU = 11
AWQ_GRID_ENV = "VLMOPT_AWQ_GRID"


def awq_grid_points() -> int:
    """Grid points for AWQModifier(n_grid=...): $VLMOPT_AWQ_GRID, else 11 on a CPU-only machine, else 20."""
    override = os.environ.get(AWQ_GRID_ENV, "").strip()
    if override:
        try:
            points = int(override)
        except ValueError:
            raise QuantizeInputError(f"{AWQ_GRID_ENV}={override!r} is not a whole number of grid points") from None
        if points < 2:
            raise QuantizeInputError(f"{AWQ_GRID_ENV} must be at least 2 (got {points})")
        return points
    from .cpu_workarounds import accelerator_available

    return AWQ_GRID_DEFAULT if accelerator_available() else AWQ_GRID_CPU


def build_recipe(spec: MethodSpec, ignore: IgnorePlan, architecture: str) -> list[Any]:
    """The modifiers for `oneshot(recipe=...)`."""
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    ignore_list = list(ignore.ignore)
    if spec.method in ("fp8", "int8"):
        return [QuantizationModifier(targets="Linear", scheme=spec.scheme, ignore=ignore_list)]
    if spec.method == "gptq":
        return [GPTQModifier(targets="Linear", scheme=spec.scheme, ignore=ignore_list)]
    if spec.method == "awq":
        # AWQ moved to `modifiers.transform.awq` and is a transform only: pair it with a quantizing modifier (§0.2).
        from llmcompressor.modifiers.transform.awq import AWQModifier

        mappings = scoped_awq_mappings(architecture, ignore.family.text_layers_regex)
        return [AWQModifier(mappings=mappings, n_grid=awq_grid_points()),
                QuantizationModifier(targets="Linear", scheme=spec.scheme, ignore=ignore_list)]
    raise QuantizeInputError(f"--method: unknown method {spec.method!r}")


def recipe_kwargs(spec: MethodSpec, sequential_targets: Sequence[str]) -> dict[str, Any]:
    """Extra `oneshot` arguments. Decoder-layer classes are passed explicitly because the default
    (`_no_split_modules`) includes vision blocks for VLMs, and the sequential pipeline would then trace the vision
    tower as one of its layers."""
    if not spec.needs_calibration:
        return {}
    return {"sequential_targets": list(sequential_targets)} if sequential_targets else {}
