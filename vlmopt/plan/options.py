"""One replica option = (service, variant, GPU, slice): does it fit, what does it sustain at the SLO, and which
vLLM arguments does it run with. Measured where a benchmark profile matches, estimated otherwise."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    server_args: ServerArgs | None
    max_batch: int

    @property
    def usable(self) -> bool:
        return self.fit.fits and self.capacity.meets_slo and self.capacity.capacity_rps > 0

    @property
    def reason(self) -> str:
        if not self.fit.fits:
            return self.fit.reason or "does not fit"
        return self.capacity.reason


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


def evaluate_option(
    service: Service,
    arch: ModelArch,
    variant: VariantChoice,
    gpu: GpuSpec,
    slice_name: str,
    efficiency: perf.Efficiency,
    measured: Sequence[tuple[str, BenchmarkProfile]] = (),
) -> OptionEval:
    share, _ = share_of(gpu, slice_name)
    shape = service_shape(arch, service)
    batched = max_num_batched_tokens(share.memory_gib, shape)
    fit = memory.fit_memory(
        arch,
        variant.scheme,
        share.memory_gib,
        service.max_model_len,
        gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
        bytes_on_disk=variant.bytes_on_disk,
        max_num_batched_tokens=batched,
        expected_tokens_per_seq=shape.max_context,
    )
    slo = service.slo.as_dict()
    est_prov = Provenance(
        kind="estimated",
        source=f"vlmopt roofline ({efficiency.source}: bandwidth x{efficiency.bandwidth:.2f}, "
        f"compute x{efficiency.compute:.2f})",
        detail=f"{gpu.id} {slice_name}, {variant.scheme}",
    )
    if not fit.fits:
        cap = perf.Capacity(0.0, False, est_prov, reason=fit.reason)
        return OptionEval(service.name, variant.name, gpu.id, slice_name, fit, cap, None, 0)
    max_batch = max(1, min(fit.max_num_seqs_suggestion, MAX_NUM_SEQS_CAP))
    kv_seqs = fit.kv_token_capacity / max(shape.max_context, 1)
    cost = model_cost(arch, variant, gpu)
    capacity = perf.estimate_capacity(cost, shape, share, efficiency, slo, min(max_batch, kv_seqs), est_prov)
    for source, profile in measured:
        if _same_shape(profile, arch, shape):
            m = perf.measured_capacity(profile, slo, source)
            capacity = perf.Capacity(
                m.capacity_rps, m.meets_slo, m.provenance, at_capacity=capacity.at_capacity,
                at_zero_load=capacity.at_zero_load, reason=m.reason or capacity.reason,
                binding_key=capacity.binding_key,
                extra={"estimated_capacity_rps": capacity.capacity_rps},
            )
            break
    args = server_args_for(service, variant, slice_name, fit, max_batch, batched)
    return OptionEval(service.name, variant.name, gpu.id, slice_name, fit, capacity, args, max_batch)


def index_profiles(
    profiles: Mapping[str, BenchmarkProfile], gpu_ids: set[str]
) -> dict[tuple[str, str, str], list[tuple[str, BenchmarkProfile]]]:
    """Measured profiles by (variant, catalog GPU id, slice); profiles on devices outside the catalog (a CPU, say)
    cannot stand for a catalog GPU and are left out here (the planner lists them as unused inputs)."""
    out: dict[tuple[str, str, str], list[tuple[str, BenchmarkProfile]]] = {}
    for source, p in profiles.items():
        gpu = p.device.catalog_id
        if p.device.kind != "gpu" or gpu not in gpu_ids or p.device.count != 1:
            continue
        out.setdefault((p.variant, gpu, p.device.mig_profile or WHOLE), []).append((source, p))
    return out


def profile_model_names(profile: BenchmarkProfile) -> set[str]:
    return {profile.model, Path(profile.model).name}
