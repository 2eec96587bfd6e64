"""Verification of a saved variant, from its files only (docs/quantize.md, "What is checked").

- `config.json` carries a compressed-tensors `quantization_config` of the expected format and bit width;
- the safetensors headers show every targeted Linear quantized and every kept one (vision tower, projector,
  `lm_head`) in a float dtype with no quantization parameters;
- every vision and projector tensor is byte-identical to the bf16 model's;
- tokenizer, processor config and chat template are present, and the tokenizer has no persisted truncation
  (https://github.com/vllm-project/llm-compressor/issues/1418, https://github.com/vllm-project/vllm/issues/19733:
  "Mismatch in image token count").
A variant that fails is not kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layers import LinearLayer
from .recipes import MethodSpec
from .safetensors_index import FLOAT_DTYPES, checkpoint_tensors, differing_tensors

EXPECTED_FORMAT = {"fp8": "float-quantized", "int8": "int-quantized", "gptq": "pack-quantized",
                   "awq": "pack-quantized"}
QUANT_SUFFIXES = (".weight_scale", ".weight_packed", ".weight_zero_point", ".weight_shape", ".weight_g_idx",
                  ".input_scale")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass
class VerificationReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    vision_tensors_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(self.problems[:3]) + (f" (+{len(self.problems) - 3} more)" if len(self.problems) > 3 else "")


def _quant_config(config: dict[str, Any]) -> dict[str, Any] | None:
    return config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")


def check_quantization_config(variant_dir: Path, spec: MethodSpec, report: VerificationReport) -> None:
    try:
        config = json.loads((variant_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        report.problems.append(f"config.json unreadable: {exc}")
        return
    qc = _quant_config(config)
    if not qc:
        report.problems.append("config.json has no quantization_config")
        return
    if qc.get("quant_method") != "compressed-tensors":
        report.problems.append(f"quantization_config.quant_method is {qc.get('quant_method')!r}, "
                               "expected 'compressed-tensors'")
    if qc.get("format") != EXPECTED_FORMAT[spec.method]:
        report.problems.append(f"quantization_config.format is {qc.get('format')!r}, "
                               f"expected {EXPECTED_FORMAT[spec.method]!r}")
    bits = {(group.get("weights") or {}).get("num_bits") for group in (qc.get("config_groups") or {}).values()}
    if bits != {spec.weight_bits}:
        report.problems.append(f"quantization_config weight bits {sorted(b for b in bits if b)}, "
                               f"expected {spec.weight_bits}")


def check_files(variant_dir: Path, is_vlm: bool, report: VerificationReport) -> None:
    if not any((variant_dir / name).is_file() for name in TOKENIZER_FILES):
        report.problems.append("no tokenizer file (" + ", ".join(TOKENIZER_FILES) + ")")
    if is_vlm and not any((variant_dir / name).is_file() for name in PROCESSOR_FILES):
        report.problems.append("no processor/preprocessor config")
    if not has_chat_template(variant_dir):
        report.problems.append("no chat template (chat_template.jinja/.json or in tokenizer/processor config)")
    tokenizer_json = variant_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        truncation = json.loads(tokenizer_json.read_text()).get("truncation")
        if truncation is not None:
            report.problems.append(f"tokenizer.json persists truncation {truncation}: vLLM would cut image tokens")


def has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = model_dir / name
        if path.is_file():
            try:
                if json.loads(path.read_text()).get("chat_template"):
                    return True
            except json.JSONDecodeError:
                continue
    return False


def _check_tied(layer: LinearLayer, tensors: dict[str, Any], baseline: dict[str, Any],
                report: VerificationReport) -> None:
    """A kept Linear tied to the input embedding: the checkpoint stores only the embedding, so that tensor must be
    there, in its float dtype, with no quantization parameters, and byte-identical to the bf16 model's."""
    key = f"{layer.tied_to}.weight"
    embedding = tensors.get(key)
    leaked = [s for s in QUANT_SUFFIXES if f"{layer.tied_to}{s}" in tensors or f"{layer.checkpoint_name}{s}" in tensors]
    if embedding is None or embedding.dtype not in FLOAT_DTYPES or leaked:
        report.problems.append(f"kept Linear {layer.checkpoint_name} is tied to {key}, which is quantized or missing "
                               f"(dtype {embedding.dtype if embedding else 'missing'}, {', '.join(leaked) or '-'})")
    elif differing_tensors(baseline, tensors, [key]):
        report.problems.append(f"kept Linear {layer.checkpoint_name} is tied to {key}, which differs from the bf16 "
                               "model's")
    else:
        report.kept.append(layer.checkpoint_name)
        note = f"{layer.checkpoint_name} is tied to {key} (no tensor of its own, as in the bf16 model); kept in bf16"
        if note not in report.notes:
            report.notes.append(note)


def verify_variant(variant_dir: Path, baseline_dir: Path, spec: MethodSpec, layers: Sequence[LinearLayer],
                   keep_regexes: Sequence[str], is_vlm: bool, vision_must_be_intact: bool = True) -> VerificationReport:
    """Check a saved variant. With `vision_must_be_intact=False` (the user overrode the ignore rules) a quantized or
    changed vision tower is reported as a note rather than a failure."""
    report = VerificationReport()
    check_quantization_config(variant_dir, spec, report)
    check_files(variant_dir, is_vlm, report)
    tensors = checkpoint_tensors(variant_dir)
    baseline = checkpoint_tensors(baseline_dir)
    if not tensors:
        report.problems.append("no safetensors weights")
        return report

    for layer in layers:
        name = layer.checkpoint_name
        weight = tensors.get(f"{name}.weight")
        if layer.quantize:
            packed = tensors.get(f"{name}.weight_packed")
            quantized_weight = packed is not None or (weight is not None and weight.dtype not in FLOAT_DTYPES)
            if f"{name}.weight_scale" in tensors and quantized_weight:
                report.quantized.append(name)
            else:
                report.problems.append(f"targeted Linear {name} is not quantized")
        elif layer.tied_to and weight is None:
            _check_tied(layer, tensors, baseline, report)
        else:
            leaked = [s for s in QUANT_SUFFIXES if f"{name}{s}" in tensors]
            if weight is None or weight.dtype not in FLOAT_DTYPES or leaked:
                report.problems.append(f"kept Linear {name} is quantized or missing "
                                       f"(dtype {weight.dtype if weight else 'missing'}, {', '.join(leaked) or '-'})")
            else:
                report.kept.append(name)

    vision_problems = []
    if keep_regexes:
        vision_names = [n for n in baseline if any(re.match(p, n) for p in keep_regexes)]
        report.vision_tensors_checked = len(vision_names)
        quantized_vision = sorted({n for n in tensors if any(re.match(p, n) for p in keep_regexes)
                                   and (n.endswith(QUANT_SUFFIXES) or tensors[n].dtype not in FLOAT_DTYPES)})
        if quantized_vision:
            vision_problems.append(f"{len(quantized_vision)} vision/projector tensors are quantized "
                                   f"(e.g. {quantized_vision[0]})")
        changed = differing_tensors(baseline, tensors, vision_names)
        if changed:
            vision_problems.append(f"{len(changed)} of {len(vision_names)} vision/projector tensors differ from the "
                                   f"bf16 model (e.g. {changed[0]})")
        if not vision_names and is_vlm:
            vision_problems.append("no vision/projector tensor matched the family's patterns in the bf16 checkpoint")
    if vision_must_be_intact:
        report.problems.extend(vision_problems)
    else:
        report.notes.extend(vision_problems)
    return report
