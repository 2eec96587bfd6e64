"""What to benchmark: the variants of a manifest, a plain model folder (e.g. a vendor AWQ/GPTQ checkpoint), or an
external OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlmopt.schemas.common import ContractError, HubReference, load_model
from vlmopt.schemas.manifest import VariantManifest


@dataclass(frozen=True)
class BenchTarget:
    variant: str
    model: str  # base model name: profiles go to <out>/<model>/<variant>@<device>.json
    method: str = "none"
    scheme: str = "BF16"
    model_path: Path | None = None  # None: an external endpoint serves it
    manifest: str | None = None
    endpoint: str | None = None
    served_name: str | None = None
    hub: HubReference | None = None  # the (base) model's hub repo and commit, when it was given as a hub id

    @property
    def hub_label(self) -> str | None:
        return f"{self.hub.repo_id}@{self.hub.revision[:12]}" if self.hub else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "model"


def checkpoint_quantization(model_dir: Path) -> tuple[str, str]:
    """(method, scheme) from a checkpoint's config.json `quantization_config`; ('none', 'BF16') without one."""
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ContractError(f"{config_path}: cannot read the model config ({exc})") from exc
    quant = config.get("quantization_config") or config.get("text_config", {}).get("quantization_config")
    if not quant:
        return "none", str(config.get("torch_dtype") or config.get("dtype") or "bf16").upper().replace(
            "BFLOAT16", "BF16"
        )
    method = str(quant.get("quant_method", "unknown")).lower()
    bits = quant.get("bits") or quant.get("w_bit")
    if method in ("awq", "gptq"):
        asym = method == "awq" or quant.get("sym") is False
        return method, f"W{bits or 4}A16" + ("_ASYM" if asym and method == "awq" else "")
    if method == "fp8":
        return "fp8", "FP8"
    if method == "compressed-tensors":
        return "compressed-tensors", str(quant.get("format") or "compressed-tensors")
    return method, method.upper()


def from_manifest(path: Path, wanted: list[str] | None) -> list[BenchTarget]:
    manifest = load_model(VariantManifest, path)
    names = [v.name for v in manifest.variants]
    if wanted:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ContractError(f"{path}: --variant {unknown[0]!r} not in the manifest (have {', '.join(names)})")
    hub = manifest.base_model_hub
    model = _slug(hub.repo_id.split("/")[-1] if hub else Path(manifest.base_model).name)
    targets = []
    for variant in manifest.variants:
        if wanted and variant.name not in wanted:
            continue
        ckpt = (path.parent / variant.path).resolve()
        if not (ckpt / "config.json").is_file():
            raise ContractError(f"{path}: variants.{variant.name}.path: no checkpoint at {ckpt}")
        targets.append(
            BenchTarget(variant.name, model, variant.method, variant.scheme, ckpt, manifest=str(path.resolve()),
                        hub=hub)
        )
    return targets


def from_model_folder(path: Path, hub: HubReference | None = None) -> BenchTarget:
    method, scheme = checkpoint_quantization(path)
    name = _slug(hub.repo_id.split("/")[-1] if hub else path.resolve().name)  # a snapshot folder is a commit hash
    return BenchTarget(variant=name, model=name, method=method, scheme=scheme, model_path=path.resolve(), hub=hub)


def resolve_targets(source: str | None, wanted: list[str] | None = None) -> list[BenchTarget]:
    """A manifest file, a folder holding manifest.json, a model folder with config.json, or a hub id (a model
    folder from the Hugging Face cache, vlmopt.hub)."""
    if not source:
        raise ContractError("give a manifest, a model folder, a hub id, or --endpoint URL --model NAME")
    path = Path(source)
    if not path.exists():
        from vlmopt.hub import ModelNotFound, looks_like_hub_id, resolve_model

        if looks_like_hub_id(source):
            try:
                ref = resolve_model(source, what="SOURCE")
            except ModelNotFound as exc:
                raise ContractError(str(exc)) from None
            if wanted:
                raise ContractError(f"{source}: --variant applies to a manifest, not to a model")
            return [from_model_folder(ref.path, ref.hub)]
    if path.is_dir() and (path / "manifest.json").is_file():
        path = path / "manifest.json"
    if path.is_file():
        return from_manifest(path, wanted)
    if path.is_dir() and (path / "config.json").is_file():
        if wanted:
            raise ContractError(f"{path}: --variant applies to a manifest, not to a model folder")
        return [from_model_folder(path)]
    if path.exists():
        raise ContractError(f"{path}: neither a manifest.json nor a model folder with config.json")
    raise ContractError(f"{path}: not found (no such file or folder, and not a hub id of the form org/name)")


def endpoint_target(endpoint: str, model: str, label: str | None = None) -> BenchTarget:
    name = _slug(label or model.split("/")[-1])
    return BenchTarget(variant=name, model=name, method="unknown", scheme="unknown", endpoint=endpoint,
                       served_name=model)
