"""One replica option = (service, variant, GPU, slice): does it fit, what does it sustain at the SLO, and which
vLLM arguments does it run with. Measured where a benchmark profile matches, estimated otherwise."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from vlmopt.hw.models import ModelArch
from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.profile import BenchmarkProfile, ServerArgs
from vlmopt.schemas.workload import Service

from . import memory, perf
from .optimizer import WHOLE
from .variants import VariantChoice

GPU_MEMORY_UTILIZATION = 0.9
MAX_NUM_SEQS_CAP = memory.MAX_NUM_SEQS_CAP
DEFAULT_PORT = 8000
# Shape tolerance for reusing a measured profile: beyond it the profile only calibrates the roofline.
SHAPE_TOLERANCE = 0.25


def compute_dtype(scheme: str, gpu: GpuSpec) -> str:
    """FP8 W8A8 needs compute capability >= 8.9; on Ampere vLLM runs FP8 as weight-only W8A16 (Marlin), i.e. at
    bf16 matmul speed (research/planning.md §5.1). INT8 W8A8 runs int8 tensor cores; W4A16 dequantizes to bf16."""
    if scheme == "FP8_DYNAMIC":
        return "fp8" if gpu.fp8 and gpu.dense_tflops("fp8") else "bf16"
    if scheme == "W8A8":
        return "int8" if gpu.dense_tflops("int8") else "bf16"
    return "bf16"


def model_cost(arch: ModelArch, variant: VariantChoice, gpu: GpuSpec) -> perf.ModelCost:
    weights = memory.weight_bytes(arch, variant.scheme, variant.bytes_on_disk)
    vision = int(arch.vision_params or 0) + int(arch.projector_params or 0)
    lm_matmul = arch.decoder_linear_params() + arch.vocab_size * arch.hidden_size  # lm_head; embeddings are lookups
    return perf.ModelCost(
        decode_weight_bytes=max(weights - 2 * vision, weights * 0.5),  # the vision tower is not read while decoding
        kv_bytes_per_token=memory.kv_bytes_per_token(arch),
        lm_params=lm_matmul,
        vision_params=vision,
        attention_width=arch.num_layers * arch.num_attention_heads * arch.head_dim,
        compute_dtype=compute_dtype(variant.scheme, gpu),
    )


def request_shape(arch: ModelArch, input_tokens: int, output_tokens: int, images: int, size: tuple[int, int]):
    tokens = arch.image_tokens(*size) if images else 0
    merge = arch.image_token_rule.merge_size
    return perf.RequestShape(input_tokens, output_tokens, images, tokens, tokens * merge * merge)


def service_shape(arch: ModelArch, service: Service) -> perf.RequestShape:
    return request_shape(arch, service.input_tokens, service.output_tokens, service.images_per_request,
                         service.image_size)


def share_of(gpu: GpuSpec, slice_name: str) -> tuple[perf.DeviceShare, MigProfileSpec | None]:
    if slice_name == WHOLE:
        return perf.device_share(gpu), None
    prof = gpu.mig_profile(slice_name)
    share = perf.device_share(gpu, prof)
    if prof.sms and gpu.sms:
        # research/planning.md §1.3: H100 slices get more SMs than compute_slices/7 (3g = 60 of 132 SMs).
        factor = prof.sms / gpu.sms
        share = perf.DeviceShare(gpu.id, prof.name, share.bandwidth_gbs,
                                 {k: v * factor for k, v in gpu.tflops.items()}, share.memory_gib)
    return share, prof


def max_num_batched_tokens(memory_gib: float, shape: perf.RequestShape) -> int:
    """vLLM's own default for the memory size, raised to hold one whole prompt in a chunk (the vision encoder's
    output for an image cannot be split across steps), rounded up to 256."""
    base = memory.default_max_num_batched_tokens(memory_gib)
    need = int(math.ceil(max(base, shape.prompt_tokens) / 256) * 256)
    return need


@dataclass(frozen=True)
class OptionEval:
    service: str
    variant: str
    gpu: str
    slice: str
    fit: memory.MemoryFit
    capacity: perf.Capacity
    max_batch: int
    # What the vLLM arguments are built from; they are built on first use (only chosen replicas need them).
    args_inputs: tuple[Service, VariantChoice, int] | None = field(default=None, repr=False, compare=False)

    @property
    def usable(self) -> bool:
        return self.fit.fits and self.capacity.meets_slo and self.capacity.capacity_rps > 0

    @property
    def reason(self) -> str:
        if not self.fit.fits:
            return self.fit.reason or "does not fit"
        return self.capacity.reason

    @cached_property
    def server_args(self) -> ServerArgs | None:
        if self.args_inputs is None:
            return None
        service, variant, batched = self.args_inputs
        return server_args_for(service, variant, self.slice, self.fit, self.max_batch, batched)


def server_args_for(
    service: Service, variant: VariantChoice, slice_name: str, fit: memory.MemoryFit, max_batch: int,
    batched_tokens: int,
) -> ServerArgs:
    env = {}
    if slice_name != WHOLE:
        # research/planning.md §5.1 (vllm PRs #39874/#50463): expandable segments hit an NVML assert on MIG.
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:False"
    return ServerArgs(
        model=variant.checkpoint,
        served_model_name=service.name,
        host="0.0.0.0",
        port=DEFAULT_PORT,
        max_model_len=service.max_model_len,
        # Pinned on every slice, not only MIG: inside MIG containers vLLM falls back to 2048/256 (vllm#55381).
        max_num_seqs=max_batch,
        max_num_batched_tokens=batched_tokens,
        gpu_memory_utilization=fit.gpu_memory_utilization,
        quantization=variant.quantization_flag,
        limit_mm_per_prompt={"image": service.images_per_request, "video": 0},
        tensor_parallel_size=1,
        env=env,
    )


def _same_shape(profile: BenchmarkProfile, arch: ModelArch, shape: perf.RequestShape) -> bool:
    w = profile.workload
    if w.input_tokens is None or w.output_tokens is None:
        return False
    if w.images_per_request != shape.images_per_request:
        return False
    size = w.image_sizes[0] if w.image_sizes else (0, 0)
    image_tokens = arch.image_tokens(*size) if w.images_per_request else 0
    pairs = ((w.input_tokens, shape.input_tokens), (w.output_tokens, shape.output_tokens),
             (image_tokens, shape.image_tokens))
    return all(abs(a - b) <= SHAPE_TOLERANCE * max(b, 1) for a, b in pairs)


@dataclass(frozen=True)
class OptionRequest:
    """One (service, variant, GPU, slice) to evaluate, with the measured profiles that may stand for it."""

    service: Service
    arch: ModelArch
    variant: VariantChoice
    gpu: GpuSpec
    slice: str
    measured: Sequence[tuple[str, BenchmarkProfile]] = ()


def evaluate_options(requests: Sequence[OptionRequest], efficiency: perf.Efficiency) -> list[OptionEval]:
    """Memory fit, capacity at the SLO (measured where a profile matches, else the roofline) and vLLM arguments for
    many options. Services of the same shape share their memory fits and model costs, and every roofline capacity
    is found in one vectorised bisection (perf.estimate_capacities)."""
    shares: dict[tuple[str, str], perf.DeviceShare] = {}
    shapes: dict[int, perf.RequestShape] = {}
    fits: dict[tuple, memory.MemoryFit] = {}
    costs: dict[tuple, perf.ModelCost] = {}
    provenances: dict[tuple[str, str, str], Provenance] = {}
    slos: dict[int, dict[str, float]] = {}
    prepared = []
    queries: list[perf.CapacityQuery] = []
    for r in requests:
        if (r.gpu.id, r.slice) not in shares:
            shares[(r.gpu.id, r.slice)] = share_of(r.gpu, r.slice)[0]
        share = shares[(r.gpu.id, r.slice)]
        if id(r.service) not in shapes:
            shapes[id(r.service)] = service_shape(r.arch, r.service)
            slos[id(r.service)] = r.service.slo.as_dict()
        shape, slo = shapes[id(r.service)], slos[id(r.service)]
        batched = max_num_batched_tokens(share.memory_gib, shape)
        fit_key = (r.arch.name, r.variant.scheme, r.variant.bytes_on_disk, share.memory_gib, r.service.max_model_len,
                   batched, shape.max_context)
        if fit_key not in fits:
            fits[fit_key] = memory.fit_memory(
                r.arch,
                r.variant.scheme,
                share.memory_gib,
                r.service.max_model_len,
                gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
                bytes_on_disk=r.variant.bytes_on_disk,
                max_num_batched_tokens=batched,
                expected_tokens_per_seq=shape.max_context,
            )
        fit = fits[fit_key]
        prov_key = (r.gpu.id, r.slice, r.variant.scheme)
        if prov_key not in provenances:
            provenances[prov_key] = Provenance(
                kind="estimated",
                source=f"vlmopt roofline ({efficiency.source}: bandwidth x{efficiency.bandwidth:.2f}, "
                f"compute x{efficiency.compute:.2f})",
                detail=f"{r.gpu.id} {r.slice}, {r.variant.scheme}",
            )
        prov = provenances[prov_key]
        if not fit.fits:
            prepared.append((r, fit, None, 0, batched, perf.Capacity(0.0, False, prov, reason=fit.reason)))
            continue
        max_batch = max(1, min(fit.max_num_seqs_suggestion, MAX_NUM_SEQS_CAP))
        kv_seqs = fit.kv_token_capacity / max(shape.max_context, 1)
        cost_key = (r.arch.name, r.variant.scheme, r.variant.bytes_on_disk, r.gpu.id)
        if cost_key not in costs:
            costs[cost_key] = model_cost(r.arch, r.variant, r.gpu)
        prepared.append((r, fit, len(queries), max_batch, batched, None))
        queries.append(perf.CapacityQuery(costs[cost_key], shape, share, slo, min(max_batch, kv_seqs), prov))
    estimated = perf.estimate_capacities(queries, efficiency)
    out = []
    for r, fit, q, max_batch, batched, capacity in prepared:
        if q is None:
            out.append(OptionEval(r.service.name, r.variant.name, r.gpu.id, r.slice, fit, capacity, 0))
            continue
        capacity = estimated[q]
        shape, slo = shapes[id(r.service)], slos[id(r.service)]
        for source, profile in r.measured:
            if _same_shape(profile, r.arch, shape):
                m = perf.measured_capacity(profile, slo, source)
                capacity = perf.Capacity(
                    m.capacity_rps, m.meets_slo, m.provenance, at_capacity=capacity.at_capacity,
                    at_zero_load=capacity.at_zero_load, reason=m.reason or capacity.reason,
                    binding_key=capacity.binding_key,
                    extra={"estimated_capacity_rps": capacity.capacity_rps},
                )
                break
        out.append(OptionEval(r.service.name, r.variant.name, r.gpu.id, r.slice, fit, capacity, max_batch,
                              (r.service, r.variant, batched)))
    return out


def evaluate_option(
    service: Service,
    arch: ModelArch,
    variant: VariantChoice,
    gpu: GpuSpec,
    slice_name: str,
    efficiency: perf.Efficiency,
    measured: Sequence[tuple[str, BenchmarkProfile]] = (),
) -> OptionEval:
    return evaluate_options([OptionRequest(service, arch, variant, gpu, slice_name, measured)], efficiency)[0]


def index_profiles(
    profiles: Mapping[str, BenchmarkProfile], gpu_ids: set[str]
) -> dict[tuple[str, str, str], list[tuple[str, BenchmarkProfile]]]:
    """Measured profiles by (variant, catalog device id, slice). A profile counts only for the catalog entry its
    device was matched to (`device.catalog_id`); a CPU profile counts only where the catalog has an entry for that
    CPU (as `vlmopt demo` adds for its local plan). Others are listed as unused inputs."""
    out: dict[tuple[str, str, str], list[tuple[str, BenchmarkProfile]]] = {}
    for source, p in profiles.items():
        gpu = p.device.catalog_id
        if gpu not in gpu_ids or p.device.count != 1:
            continue
        out.setdefault((p.variant, gpu, p.device.mig_profile or WHOLE), []).append((source, p))
    return out


def profile_model_names(profile: BenchmarkProfile) -> set[str]:
    return {profile.model, Path(profile.model).name}
