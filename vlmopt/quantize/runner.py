"""`vlmopt quantize` as a function: validate everything, then produce, score, verify and record each variant.

Order matters for "bad input writes nothing": every check that can fail on the user's input (paths, methods,
calibration data, architecture rules, group sizes, disk space) runs before the first file is written.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlmopt.atomic import FolderNotOursError, atomic_folder, remove_stale_staging
from vlmopt.schemas import HubReference, Provenance, VariantManifest, utc_now_iso
from vlmopt.schemas.manifest import Calibration, Fidelity, RejectedVariant, Variant

from . import manifest as manifest_io
from .calibration import CalibrationSource, build_dataset, heldout_samples, load_samples, make_collator
from .cpu_workarounds import awq_pin_memory_workaround, bf16_matmul_in_fp32, one_thread_for_small_matrices
from .errors import QuantizeInputError, VariantFailed, VariantRejected, describe_exception
from .fidelity import FidelityResult, build_probes, compare, next_token_logprobs
from .ignore_rules import IgnorePlan, resolve_ignore, vision_patterns
from .layers import LinearLayer, check_group_size, linear_inventory, sequential_targets
from .loading import ModelFolder, image_token_id, inspect_model_dir, load_model, load_processor
from .measure import PeakMemory
from .output import check_disk_space
from .recipes import MethodSpec, awq_grid_points, build_recipe, recipe_kwargs
from .safetensors_index import checkpoint_tensors, weights_bytes
from .size_estimate import estimate_variant_bytes
from .verify import verify_variant

HELDOUT_PROMPTS = 8
FIDELITY_HOW = ("in-process after oneshot, before save: compressed-tensors quantized forward vs the bf16 model, "
                "teacher-forced next-token distributions")
# Files of the source folder that `save_pretrained` does not rewrite but a served variant may need.
# Every variant folder vlmopt writes holds its quantize log; --force replaces only such a folder.
VARIANT_LOG = "quantize.log"
VARIANT_MARKERS = (VARIANT_LOG,)
_SKIP_COPY_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


@dataclass
class QuantizeRequest:
    model_dir: Path
    methods: Sequence[MethodSpec]
    out_dir: Path
    calib: CalibrationSource = field(default_factory=lambda: CalibrationSource("synthetic"))
    samples: int = 64
    max_seq_len: int = 2048
    ignore: Sequence[str] | None = None
    max_kl: float | None = None
    force: bool = False
    name_suffix: str = ""
    heldout_prompts: int = HELDOUT_PROMPTS
    # Set when the model was given as a hub id (vlmopt.hub.resolve_model): `model_dir` is then the cached snapshot,
    # whose folder name is a commit hash, so outputs are named after the repo instead.
    hub: HubReference | None = None

    @property
    def model_name(self) -> str:
        return self.hub.repo_id.split("/")[-1] if self.hub else Path(self.model_dir).expanduser().resolve().name


Status = Literal["created", "skipped", "rejected", "failed"]


@dataclass
class VariantOutcome:
    name: str
    spec: MethodSpec
    status: Status
    message: str = ""
    variant: Variant | None = None
    fidelity: FidelityResult | None = None


@dataclass
class QuantizeResult:
    manifest_path: Path
    manifest: VariantManifest
    outcomes: list[VariantOutcome]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return all(o.status in ("created", "skipped") for o in self.outcomes)


Reporter = Callable[[str, str], None]  # (variant name, stage description)


def _quiet(_: str, __: str) -> None:
    return None


@dataclass
class _Prepared:
    folder: ModelFolder
    plan: IgnorePlan
    processor: Any
    layers: list[LinearLayer]
    seq_targets: list[str]
    reference: list[Any]
    probes: list[Any]
    dataset: Any
    calib_samples: int
    dropped: int


def variant_name(spec: MethodSpec, suffix: str) -> str:
    return spec.method + (f"-{suffix}" if suffix else "")


def run_quantize(request: QuantizeRequest, report: Reporter = _quiet) -> QuantizeResult:
    folder = inspect_model_dir(request.model_dir)
    if request.samples < 1:
        raise QuantizeInputError("--samples must be at least 1")
    if request.max_seq_len < 16:
        raise QuantizeInputError("--max-seq-len must be at least 16")
    if request.max_kl is not None and request.max_kl < 0:
        raise QuantizeInputError("--max-kl must be >= 0")
    if request.name_suffix and not request.name_suffix.replace("-", "").replace("_", "").isalnum():
        raise QuantizeInputError("--suffix may only contain letters, digits, '-' and '_'")
    if any(spec.method == "awq" for spec in request.methods):
        awq_grid_points()  # a bad $VLMOPT_AWQ_GRID is bad input: refused before anything is written
    plan = resolve_ignore(folder.config, request.ignore)
    warnings = list(plan.warnings)
    model_out = Path(request.out_dir).expanduser().resolve() / request.model_name
    manifest_path = model_out / manifest_io.MANIFEST_NAME
    existing = manifest_io.load_existing(manifest_path)

    todo: list[MethodSpec] = []
    outcomes: list[VariantOutcome] = []
    for spec in request.methods:
        name = variant_name(spec, request.name_suffix)
        if (model_out / name).exists() and not request.force:
            known = existing is not None and any(v.name == name for v in existing.variants)
            message = "exists, kept (use --force to redo)" if known else \
                "folder exists but is not in the manifest; kept as is (use --force to redo)"
            outcomes.append(VariantOutcome(name, spec, "skipped", message))
        else:
            todo.append(spec)

    tensors = checkpoint_tensors(folder.path)
    needed = sum(estimate_variant_bytes(tensors, spec, plan.family.text_layers_regex, plan.ignore) for spec in todo)
    if todo:
        check_disk_space(model_out, needed)

    prepared = _prepare(request, folder, plan, todo, report) if todo else None
    manifest = manifest_io.start_manifest(folder, existing, model_out, request.hub)
    if prepared is None:
        if existing is not None or not manifest_path.exists():
            manifest_io.write(manifest, manifest_path)
        return QuantizeResult(manifest_path, manifest, outcomes, warnings)

    model_out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(model_out):
        warnings.append(f"removed {stale.name}, left by an interrupted run")
    manifest_io.write(manifest, manifest_path)
    for spec in todo:
        outcome = _produce(request, prepared, spec, model_out, report)
        outcomes.append(outcome)
        if outcome.variant is not None:
            manifest_io.upsert(manifest, outcome.variant)
        elif outcome.status in ("rejected", "failed"):
            manifest_io.record_rejection(manifest, RejectedVariant(
                name=outcome.name, method=spec.method, reason=outcome.message,
                fidelity=_fidelity(outcome.fidelity, request) if outcome.fidelity else None, date=utc_now_iso()))
        manifest_io.write(manifest, manifest_path)
    order = {v: i for i, v in enumerate([manifest_io.BASELINE_NAME, *(variant_name(s, request.name_suffix)
                                                                        for s in request.methods)])}
    manifest.variants.sort(key=lambda v: order.get(v.name, len(order)))
    manifest_io.write(manifest, manifest_path)
    return QuantizeResult(manifest_path, manifest, outcomes, warnings)


def _prepare(request: QuantizeRequest, folder: ModelFolder, plan: IgnorePlan, todo: Sequence[MethodSpec],
             report: Reporter) -> _Prepared:
    """Everything shared by the variants, computed once from the bf16 model: calibration set, layer inventory,
    and the reference next-token distributions on the held-out prompts."""
    report("bf16", "loading processor and calibration data")
    processor = load_processor(folder)
    with_images = plan.family.is_vlm or folder.is_multimodal
    dataset, dropped, calib_samples = None, 0, 0
    if any(spec.needs_calibration for spec in todo):
        samples = load_samples(request.calib, request.samples, with_images=with_images)
        dataset, dropped = build_dataset(processor, samples, request.max_seq_len)
        calib_samples = len(dataset)
    report("bf16", "loading the bf16 model")
    model = load_model(folder)
    layers = linear_inventory(model, plan)
    if not any(layer.quantize for layer in layers):
        raise QuantizeInputError("the ignore rules keep every Linear layer: nothing to quantize")
    for spec in todo:
        check_group_size(layers, spec)
    seq_targets = sequential_targets(model, plan.family.text_layers_regex)
    report("bf16", "scoring the bf16 model on held-out prompts")
    probes = build_probes(processor, heldout_samples(request.heldout_prompts, with_images=with_images),
                          image_token_id(folder, processor))
    try:
        reference = next_token_logprobs(model, probes)
    except Exception as exc:  # nothing is written yet; the user gets one line, not the model's traceback
        raise QuantizeInputError(f"MODEL_DIR {folder.path}: the bf16 model fails on its own processor's output for "
                                 f"the held-out prompts: {describe_exception(exc)}") from exc
    del model
    gc.collect()
    return _Prepared(folder, plan, processor, layers, seq_targets, reference, probes, dataset, calib_samples, dropped)


def _produce(request: QuantizeRequest, prep: _Prepared, spec: MethodSpec, model_out: Path,
             report: Reporter) -> VariantOutcome:
    name = variant_name(spec, request.name_suffix)
    final = model_out / name
    fidelity: FidelityResult | None = None
    try:
        with PeakMemory() as measured, atomic_folder(final, VARIANT_MARKERS, "vlmopt variant") as staging:
            fidelity, oneshot_s, verification = _quantize_into(request, prep, spec, name, staging, report)
        variant = _variant_entry(request, prep, spec, name, final, model_out, fidelity, verification,
                                 measured.result, oneshot_s)
        return VariantOutcome(name, spec, "created", "verified", variant, fidelity)
    except VariantRejected as exc:
        return VariantOutcome(name, spec, "rejected", str(exc), None, fidelity or getattr(exc, "fidelity", None))
    except VariantFailed as exc:
        return VariantOutcome(name, spec, "failed", str(exc), None, getattr(exc, "fidelity", None))
    except FolderNotOursError as exc:  # --force on a folder vlmopt did not write: refused before any work
        return VariantOutcome(name, spec, "failed", str(exc))
    finally:
        gc.collect()


def _quantize_into(request: QuantizeRequest, prep: _Prepared, spec: MethodSpec, name: str, staging: Path,
                   report: Reporter) -> tuple[FidelityResult, tuple[float, float], Any]:
    from llmcompressor import oneshot
    from loguru import logger

    _ensure_metric_level(logger)
    log_sink = logger.add(str(staging / VARIANT_LOG), level="DEBUG")
    try:
        report(name, "loading the bf16 model")
        model = load_model(prep.folder)
        recipe = build_recipe(spec, prep.plan, prep.folder.architecture)
        kwargs: dict[str, Any] = recipe_kwargs(spec, prep.seq_targets)
        if spec.needs_calibration:
            kwargs.update(dataset=prep.dataset, num_calibration_samples=prep.calib_samples,
                          data_collator=make_collator(next(model.parameters()).dtype),
                          max_seq_length=request.max_seq_len, shuffle_calibration_samples=False)
        report(name, f"oneshot {spec.scheme}" + (f" on {prep.calib_samples} samples" if spec.needs_calibration else ""))
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            with awq_pin_memory_workaround(), bf16_matmul_in_fp32(), one_thread_for_small_matrices(model):
                oneshot(model=model, recipe=recipe, processor=prep.processor, **kwargs)
        except Exception as exc:
            raise VariantFailed(f"llm-compressor oneshot failed: {describe_exception(exc)} "
                                f"(log: {name}/quantize.log)") from exc
        oneshot_s = (time.perf_counter() - started, time.process_time() - cpu_started)

        report(name, "scoring against bf16 on held-out prompts")
        try:
            fidelity = compare(prep.reference, next_token_logprobs(model, prep.probes))
        except Exception as exc:  # NaN logits (ValueError) or the quantized forward itself failing
            raise VariantFailed(f"fidelity check failed: {describe_exception(exc)}") from exc
        if request.max_kl is not None and fidelity.mean_kl > request.max_kl:
            rejected = VariantRejected(f"mean KL {fidelity.mean_kl:.3g} > --max-kl {request.max_kl:g}")
            rejected.fidelity = fidelity  # type: ignore[attr-defined]
            raise rejected

        report(name, "saving")
        model.save_pretrained(staging, save_compressed=True)
        prep.processor.save_pretrained(staging)
        _copy_missing_files(prep.folder.path, staging)
        del model
    finally:
        logger.remove(log_sink)

    report(name, "verifying the saved checkpoint")
    verification = verify_variant(
        staging, prep.folder.path, spec, prep.layers, vision_patterns(prep.plan.family),
        is_vlm=prep.plan.family.is_vlm, vision_must_be_intact=not prep.plan.user_override,
    )
    if not verification.ok:
        failed = VariantFailed("verification failed: " + verification.summary())
        failed.fidelity = fidelity  # type: ignore[attr-defined]
        raise failed
    return fidelity, oneshot_s, verification


def _ensure_metric_level(logger: Any) -> None:
    """llm-compressor logs GPTQ errors at a custom METRIC level that only its own logger set-up registers; with its
    console logging turned off (LLM_COMPRESSOR_LOG_DISABLED) that registration is skipped and GPTQ crashes."""
    try:
        logger.level("METRIC")
    except ValueError:
        logger.level("METRIC", no=38)


def _copy_missing_files(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(_SKIP_COPY_SUFFIXES) and not (target / path.name).exists() \
                and path.name != "model.safetensors.index.json":
            shutil.copy2(path, target / path.name)


def _fidelity(result: FidelityResult, request: QuantizeRequest) -> Fidelity:
    return Fidelity(
        mean_kl=result.mean_kl,
        top1_agreement=result.top1_agreement,
        prompts=result.prompts,
        positions=result.positions,
        measured_how=FIDELITY_HOW,
        heldout_source=f"synthetic held-out set, {request.heldout_prompts} image+text prompts "
                       "(seeds disjoint from calibration)",
    )


def _variant_entry(request: QuantizeRequest, prep: _Prepared, spec: MethodSpec, name: str, final: Path,
                   model_out: Path, fidelity: FidelityResult, verification: Any, measured: Any,
                   oneshot_s: tuple[float, float]) -> Variant:
    notes = list(verification.notes)
    if prep.dropped:
        notes.append(f"{prep.dropped} calibration samples longer than --max-seq-len were dropped")
    if not prep.plan.vision_rules_applied:
        notes.append("vision rules not applied: " + ("user --ignore" if prep.plan.user_override else "text-only"))
    vision_intact = None
    if prep.plan.family.is_vlm:
        vision_intact = not any("vision/projector" in n for n in verification.notes)
    return Variant(
        name=name,
        method=spec.method,  # type: ignore[arg-type]
        scheme=spec.scheme,  # type: ignore[arg-type]
        path=manifest_io.relative_path(final, model_out),
        bytes_on_disk=weights_bytes(final),
        quantized_modules=verification.quantized,
        kept_modules=list(prep.plan.ignore),
        calibration=Calibration(source=request.calib.label(), samples=prep.calib_samples,
                                max_seq_len=request.max_seq_len) if spec.needs_calibration
        else Calibration(source="none (data-free scheme)"),
        fidelity=_fidelity(fidelity, request),
        wall_time_s=round(measured.wall_time_s, 3),
        peak_memory_bytes=measured.peak_memory_bytes,
        peak_memory_kind=measured.peak_memory_kind,
        oneshot_time_s=round(oneshot_s[0], 3),
        oneshot_cpu_time_s=round(oneshot_s[1], 3),
        tool_versions=manifest_io.tool_versions(),
        verified=True,
        notes=notes,
        ignore_rules=prep.plan.describe(),
        vision_intact=vision_intact,
        provenance=Provenance(kind="measured", source=f"vlmopt quantize on {manifest_io.machine_label()}",
                              date=utc_now_iso(), detail="size from the saved files; time and peak memory of load, "
                              "oneshot, scoring, save and verification; fidelity in-process"),
    )
