"""Variant manifest: variants/<model>/manifest.json, written by `vlmopt quantize`, read by benchmark and plan."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .common import SCHEMA_VERSION, HubReference, Provenance, StrictModel

QuantMethod = Literal["none", "fp8", "int8", "gptq", "awq"]
QuantScheme = Literal["BF16", "FP8_DYNAMIC", "W8A8", "W4A16", "W4A16_ASYM"]


class Calibration(StrictModel):
    source: str = Field(description="synthetic | folder path | jsonl path | none")
    samples: int = 0
    max_seq_len: int = 0


class Fidelity(StrictModel):
    """Next-token agreement with the bf16 baseline on held-out image+text prompts."""

    mean_kl: float = Field(ge=0)
    top1_agreement: float = Field(ge=0, le=1)
    prompts: int = Field(ge=1)
    measured_how: str = Field(description="e.g. 'in-process before save, fake-quant' or 'through vLLM logprobs'")
    positions: int = Field(default=0, ge=0, description="next-token positions scored, over all prompts")
    heldout_source: str = Field(default="", description="where the held-out prompts came from (never calibration)")


class Variant(StrictModel):
    name: str
    method: QuantMethod
    scheme: QuantScheme
    path: str = Field(description="checkpoint folder, relative to the manifest's folder")
    bytes_on_disk: int = Field(ge=0, description="bytes of the *.safetensors weights (what memory fit needs)")
    quantized_modules: list[str] = Field(default_factory=list, description="patterns/targets quantized")
    kept_modules: list[str] = Field(default_factory=list, description="ignore patterns kept in bf16")
    calibration: Calibration | None = None
    fidelity: Fidelity | None = Field(default=None, description="None for the baseline")
    wall_time_s: float = 0.0
    peak_memory_bytes: int = 0
    tool_versions: dict[str, str] = Field(default_factory=dict)
    verified: bool = False
    notes: list[str] = Field(default_factory=list)
    peak_memory_kind: str = Field(default="", description="cpu_rss (sampled) | gpu_max_allocated")
    oneshot_time_s: float = Field(default=0.0, ge=0, description="llm-compressor oneshot alone, within wall_time_s")
    oneshot_cpu_time_s: float | None = Field(
        default=None, ge=0, description="CPU time of the oneshot, all threads (wall time on a shared machine says "
        "more about the neighbours than about the method)"
    )
    ignore_rules: str = Field(default="", description="family rules or the user's --ignore list that were applied")
    vision_intact: bool | None = Field(
        default=None, description="vision tower + projector byte-identical to the bf16 model's (None: not checked)"
    )
    provenance: Provenance | None = Field(default=None, description="which run measured size, time, memory, fidelity")


class RejectedVariant(StrictModel):
    """A variant that was produced but not kept: failed verification or worse than --max-kl."""

    name: str
    method: QuantMethod
    reason: str
    fidelity: Fidelity | None = None
    date: str = ""


class VariantManifest(StrictModel):
    schema_version: int = SCHEMA_VERSION
    base_model: str = Field(description="path or name of the bf16 model")
    base_model_hub: HubReference | None = Field(
        default=None, description="set when the bf16 model was given as a hub id: repo and the commit used"
    )
    architecture: str = Field(description="config.json architectures[0], e.g. LlavaForConditionalGeneration")
    model_type: str = ""
    created: str = ""
    variants: list[Variant]
    rejected: list[RejectedVariant] = Field(default_factory=list)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r}; have {[v.name for v in self.variants]}")

    def variant_dir(self, name: str, manifest_path: Path | str) -> Path:
        """Absolute checkpoint folder of a variant (`path` is relative to the manifest's folder)."""
        return (Path(manifest_path).resolve().parent / self.variant(name).path).resolve()
