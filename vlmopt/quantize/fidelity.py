"""Fidelity of a quantized model against the bf16 one: mean KL divergence of next-token distributions and top-1
agreement on held-out image+text prompts: a quality proxy that runs on a CPU (docs/quantize.md, "What is checked").

Measured in-process on the model right after `oneshot` and before saving: at that point compressed-tensors runs
the forward pass with the quantized weights (and dynamic activation quantization for W8A8 / FP8_DYNAMIC), i.e. the
numerics vLLM will serve. A transformers reload of the saved checkpoint is not used: with transformers 5.x it can
treat the vision tower as quantized and give NaN logits (docs/quantize.md, "What is checked").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .calibration import Sample, encode

POSITIONS_PER_PROMPT = 32


@dataclass(frozen=True)
class Probe:
    """One held-out prompt, encoded, and the token positions whose next-token distributions are compared."""

    inputs: dict[str, Any]
    positions: Any  # LongTensor of indices into the sequence


@dataclass(frozen=True)
class FidelityResult:
    mean_kl: float
    top1_agreement: float
    prompts: int
    positions: int


def build_probes(processor: Any, samples: Sequence[Sample], image_token_id: int | None,
                 positions_per_prompt: int = POSITIONS_PER_PROMPT) -> list[Probe]:
    """Encode held-out samples; score the last text positions (image placeholder positions predict nothing useful,
    and the last positions are the ones that see both the image and the whole question)."""
    import torch

    probes = []
    for sample in samples:
        # the processor's batch of one, as produced (image_grid_thw, pixel_attention_mask, ... included)
        encoded = {k: torch.as_tensor(v) for k, v in encode(processor, sample).items()}
        ids = encoded["input_ids"][0]
        text_positions = torch.arange(ids.shape[0])
        if image_token_id is not None:
            text_positions = text_positions[ids != image_token_id]
        probes.append(Probe(inputs=encoded, positions=text_positions[-positions_per_prompt:]))
    return probes


def next_token_logprobs(model: Any, probes: Sequence[Probe]) -> list[Any]:
    """float32 log-probabilities [positions, vocab] per probe."""
    import torch

    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for probe in probes:
            inputs = {k: (v.to(dtype) if v.is_floating_point() else v).to(device) for k, v in probe.inputs.items()}
            logits = model(**inputs).logits[0]
            out.append(torch.log_softmax(logits[probe.positions.to(device)].float(), dim=-1).cpu())
    return out


def compare(reference: Sequence[Any], candidate: Sequence[Any]) -> FidelityResult:
    """Mean over all scored positions of KL(reference || candidate), and the share of positions whose most likely
    next token is the same."""
    import torch

    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"need the same non-zero number of probes, got {len(reference)} and {len(candidate)}")
    kls, agree = [], []
    for ref, cand in zip(reference, candidate, strict=True):
        if ref.shape != cand.shape:
            raise ValueError(f"log-prob shapes differ: {tuple(ref.shape)} vs {tuple(cand.shape)}")
        kls.append((ref.exp() * (ref - cand)).sum(dim=-1))
        agree.append(ref.argmax(dim=-1) == cand.argmax(dim=-1))
    kl = torch.cat(kls)
    if not torch.isfinite(kl).all():
        raise ValueError("non-finite KL: the quantized model produced NaN/inf logits")
    hits = torch.cat(agree)
    return FidelityResult(mean_kl=float(kl.mean().clamp_min(0.0)), top1_agreement=float(hits.float().mean()),
                          prompts=len(reference), positions=int(hits.numel()))
