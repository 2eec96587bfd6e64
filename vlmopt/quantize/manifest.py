"""Build and update `variants/<model>/manifest.json` (contract: `vlmopt.schemas.manifest`,
docs/quantize.md#the-manifest)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from vlmopt.machine import cpu_model_name
from vlmopt.schemas import ContractError, HubReference, VariantManifest, load_model, save_model, utc_now_iso
from vlmopt.schemas.manifest import RejectedVariant, Variant

from .errors import QuantizeInputError
from .loading import ModelFolder
from .safetensors_index import weights_bytes

MANIFEST_NAME = "manifest.json"
BASELINE_NAME = "bf16"
TOOLS = ("vlmopt", "llmcompressor", "compressed-tensors", "transformers", "torch")


def tool_versions() -> dict[str, str]:
    versions = {}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_label() -> str:
    """CPU model (or GPU name) and core count, for the provenance of every measured figure."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (GPU)"
    except ImportError:
        pass
    return f"{cpu_model_name()}, {os.cpu_count()} cores (CPU)"


def relative_path(target: Path, manifest_dir: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(manifest_dir).resolve())


def load_existing(path: Path) -> VariantManifest | None:
    if not path.exists():
        return None
    try:
        return load_model(VariantManifest, path)
    except ContractError as exc:
        raise QuantizeInputError(f"existing manifest is invalid, fix or remove it: {exc}") from exc


def baseline_entry(folder: ModelFolder, manifest_dir: Path) -> Variant:
    return Variant(
        name=BASELINE_NAME,
        method="none",
        scheme="BF16",
        path=relative_path(folder.path, manifest_dir),
        bytes_on_disk=weights_bytes(folder.path),
        verified=True,
        notes=["the unquantized model the variants are compared against"],
    )


def start_manifest(folder: ModelFolder, existing: VariantManifest | None, manifest_dir: Path,
                   hub: HubReference | None = None) -> VariantManifest:
    """A manifest holding the baseline plus every variant of a previous run that is still on disk. `hub`: the repo and
    commit the bf16 model came from, when it was given as a hub id."""
    if existing is not None and existing.architecture != folder.architecture:
        raise QuantizeInputError(f"{manifest_dir / MANIFEST_NAME} belongs to a {existing.architecture} model, not "
                                 f"{folder.architecture}; use another --out")
    kept = [v for v in (existing.variants if existing else []) if v.name != BASELINE_NAME
            and (manifest_dir / v.path).is_dir()]
    return VariantManifest(
        base_model=str(folder.path),
        base_model_hub=hub,
        architecture=folder.architecture,
        model_type=folder.model_type,
        created=utc_now_iso(),
        variants=[baseline_entry(folder, manifest_dir), *kept],
        rejected=list(existing.rejected) if existing else [],
    )


def upsert(manifest: VariantManifest, variant: Variant) -> None:
    manifest.variants = [v for v in manifest.variants if v.name != variant.name] + [variant]
    manifest.rejected = [r for r in manifest.rejected if r.name != variant.name]


def record_rejection(manifest: VariantManifest, rejected: RejectedVariant) -> None:
    manifest.rejected = [r for r in manifest.rejected if r.name != rejected.name] + [rejected]


def write(manifest: VariantManifest, path: Path) -> Path:
    return save_model(manifest, path)
