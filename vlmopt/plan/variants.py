"""Which variants a service may run: from its variant manifest when there is one, else the default set
(bf16 / fp8 / awq / gptq) with fidelity priors; and whether each clears the service's quality floor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vlmopt.schemas.common import Provenance
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.workload import QualityFloor, Service

from .errors import PlanInputError

# (name, method, scheme) of the variants `vlmopt quantize` makes by default.
DEFAULT_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("bf16", "none", "BF16"),
    ("fp8", "fp8", "FP8_DYNAMIC"),
    ("awq", "awq", "W4A16_ASYM"),
    ("gptq", "gptq", "W4A16"),
)
# Fidelity priors (mean KL, top-1 agreement) used only when no manifest measured them. Neural Magic's quantized VLMs
# (https://neuralmagic.com/blog/4x-faster-vision-language-models-with-quantization, 2025-03-20): "FP8 and INT8
# quantized versions recover >99% across five vision benchmarks, while INT4 recovers ~98% on average"; the official
# Qwen2.5-VL-7B AWQ keeps 95% of MMMU. We read recovery as top-1 agreement and pick KL values of the same order.
# They are labelled estimated priors everywhere they appear (docs/cost-model.md).
PRIOR_FIDELITY: dict[str, tuple[float, float]] = {
    "BF16": (0.0, 1.0),
    "FP8_DYNAMIC": (0.005, 0.99),
    "W8A8": (0.01, 0.985),
    "W4A16": (0.04, 0.95),
    "W4A16_ASYM": (0.04, 0.95),
}
PRIOR_SOURCE = "prior: published recovery of quantized VLMs (FP8/INT8 >99%, INT4 ~95-98%; docs/cost-model.md)"


@dataclass(frozen=True)
class VariantChoice:
    name: str
    method: str
    scheme: str
    checkpoint: str  # what vLLM's --model gets
    quantization_flag: str | None  # --quantization, only when vLLM cannot read it from the checkpoint
    bytes_on_disk: int | None
    mean_kl: float
    top1_agreement: float
    fidelity_provenance: Provenance
    manifest: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.scheme == "BF16"


def _matches(service: Service, manifest_path: str, manifest: VariantManifest) -> bool:
    if service.manifest is not None:
        return Path(service.manifest).resolve() == Path(manifest_path).resolve()
    candidates = {manifest.base_model, Path(manifest.base_model).name, Path(manifest_path).parent.name}
    return service.model in candidates or Path(service.model).name in candidates


def find_manifest(
    service: Service, manifests: Mapping[str, VariantManifest]
) -> tuple[str, VariantManifest] | None:
    for path, manifest in manifests.items():
        if _matches(service, path, manifest):
            return path, manifest
    return None


def variants_from_manifest(path: str, manifest: VariantManifest) -> list[VariantChoice]:
    folder = Path(path).parent
    out = []
    for v in manifest.variants:
        if v.fidelity is not None:
            kl, top1 = v.fidelity.mean_kl, v.fidelity.top1_agreement
            prov = Provenance(
                kind="measured", source=path, date=manifest.created or None, detail=v.fidelity.measured_how
            )
        elif v.scheme == "BF16":
            kl, top1 = 0.0, 1.0
            prov = Provenance(kind="measured", source=path, detail="the baseline itself")
        else:
            kl, top1 = PRIOR_FIDELITY[v.scheme]
            prov = Provenance(kind="estimated", source=PRIOR_SOURCE, detail=f"{path} has no fidelity for {v.name}")
        checkpoint = v.path if Path(v.path).is_absolute() else str(folder / v.path)
        out.append(
            VariantChoice(v.name, v.method, v.scheme, checkpoint, None, v.bytes_on_disk or None, kl, top1, prov, path)
        )
    return out


def default_variants(model_id: str, hf_id: str | None) -> list[VariantChoice]:
    """Without a manifest: the bf16 checkpoint; fp8 made online by vLLM from it (`--quantization fp8`); awq/gptq
    from the folders `vlmopt quantize` would write (variants/<model>/<variant>)."""
    base = hf_id or model_id
    out = []
    for name, method, scheme in DEFAULT_VARIANTS:
        kl, top1 = PRIOR_FIDELITY[scheme]
        prov = Provenance(kind="estimated", source=PRIOR_SOURCE)
        if scheme == "BF16":
            checkpoint, flag = base, None
        elif scheme == "FP8_DYNAMIC":
            checkpoint, flag = base, "fp8"
        else:
            checkpoint, flag = f"variants/{model_id}/{name}", None
        out.append(VariantChoice(name, method, scheme, checkpoint, flag, None, kl, top1, prov))
    return out


def quality_failure(variant: VariantChoice, floor: QualityFloor) -> str | None:
    """Why `variant` misses the floor, or None when it clears it."""
    if floor.max_kl is not None and variant.mean_kl > floor.max_kl:
        return f"mean KL {variant.mean_kl:g} > max_kl {floor.max_kl:g} ({variant.fidelity_provenance.kind})"
    if floor.min_top1_agreement is not None and variant.top1_agreement < floor.min_top1_agreement:
        return (
            f"top-1 agreement {variant.top1_agreement:g} < min_top1_agreement {floor.min_top1_agreement:g} "
            f"({variant.fidelity_provenance.kind})"
        )
    return None


def select_variants(
    service: Service, where: str, available: list[VariantChoice]
) -> tuple[list[VariantChoice], dict[str, str]]:
    """Variants the service may run (allowed list, quality floor) and, for the others, why not."""
    names = [v.name for v in available]
    if service.variants is not None:
        unknown = [n for n in service.variants if n not in names]
        if unknown:
            raise PlanInputError(f"{where}.variants: unknown variant(s) {unknown}; known: {names}")
    excluded: dict[str, str] = {}
    kept = []
    for v in available:
        if service.variants is not None and v.name not in service.variants:
            continue
        reason = quality_failure(v, service.quality)
        if reason:
            excluded[v.name] = reason
        else:
            kept.append(v)
    return kept, excluded
