"""One replica option = (service, variant, GPU, slice): does it fit, what does it sustain at the SLO, and which
vLLM arguments does it run with. Measured where a benchmark profile matches, estimated otherwise; infeasible where
the benchmark recorded the variant as unservable on that device. Every capacity carries an error band
(vlmopt/plan/bands.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from vlmopt.hw.models import ModelArch
from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.plan import HostSizing
from vlmopt.schemas.profile import BenchmarkProfile, ServerArgs
from vlmopt.schemas.workload import Service

from . import bands, memory, perf
from . import host as host_model
from .optimizer import WHOLE
from .variants import VariantChoice

GPU_MEMORY_UTILIZATION = 0.9
# Estimates assume a replica may run this many API servers (`vllm serve --api-server-count`, one core each) in
# front of its engine: image preprocessing caps each at 1 / (its CPU seconds per request), and the deploy bundle
# sizes the real count at the planned rate (`host.host_sizing`). A CPU-served replica (the demo) passes 1.
PLANNED_API_SERVERS = 4
MAX_NUM_SEQS_CAP = memory.MAX_NUM_SEQS_CAP
DEFAULT_PORT = 8000
# Shape tolerance for reusing a measured profile: beyond it the profile only calibrates the roofline.
SHAPE_TOLERANCE = 0.25


def compute_dtype(scheme: str, gpu: GpuSpec) -> str:
    """FP8 W8A8 needs compute capability >= 8.9; on Ampere vLLM runs FP8 as weight-only W8A16 (Marlin), i.e. at
    bf16 matmul speed (docs.vllm.ai quantization/fp8; vllm PR #5975). INT8 W8A8 runs int8 tensor cores; W4A16
    dequantizes to bf16."""
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
        vision_attention_width=arch.vision.num_layers * arch.vision.hidden_size if arch.vision else 0.0,
        layers=arch.num_layers,
    )


def request_shape(arch: ModelArch, input_tokens: int, output_tokens: int, images: int,
                  size: tuple[int, int]) -> perf.RequestShape:
    """The request as the model sees it: image tokens in the prompt, and the encoder's patches and tiles per image
    (the family's own rule, vlmopt/hw/models.py)."""
    if not images:
        return perf.RequestShape(input_tokens, output_tokens)
    enc = arch.image_encoding(*size)
    decoder_tokens = enc.tokens if arch.image_token_rule.in_decoder_sequence else 1
    return perf.RequestShape(input_tokens, output_tokens, images, decoder_tokens, enc.encoder_patches, enc.tiles)


def service_shape(arch: ModelArch, service: Service) -> perf.RequestShape:
    return request_shape(arch, service.input_tokens, service.output_tokens, service.images_per_request,
                         service.image_size)


def share_of(gpu: GpuSpec, slice_name: str) -> tuple[perf.DeviceShare, MigProfileSpec | None]:
    if slice_name == WHOLE:
        return perf.device_share(gpu), None
    prof = gpu.mig_profile(slice_name)
    share = perf.device_share(gpu, prof)
    if prof.sms and gpu.sms:
        # The MIG user guide's profile tables: H100 slices get more SMs than compute_slices/7 (3g = 60 of 132 SMs).
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
    # The API servers' costs and the request shape the estimate used: what host sizing needs (`host_sizing`).
    host: perf.HostCosts | None = field(default=None, repr=False, compare=False)
    shape: perf.RequestShape | None = field(default=None, repr=False, compare=False)

    def host_sizing(self, rate_rps: float) -> HostSizing | None:
        """What the replica needs from its host at `rate_rps` (None for an option that cannot run)."""
        if self.host is None or self.shape is None:
            return None
        return host_model.host_sizing(self.host, self.shape, rate_rps)

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
        # vllm PRs #39874/#50463: expandable segments hit an NVML assert on MIG.
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
    """One (service, variant, GPU, slice) to evaluate, with the measured profiles that may stand for it (a profile
    marked `unservable` makes the option infeasible), and the host costs of its API servers (None: measured ones
    from those profiles, else the family's bundled processor timing, else priors; `host.host_costs_for`)."""

    service: Service
    arch: ModelArch
    variant: VariantChoice
    gpu: GpuSpec
    slice: str
    measured: Sequence[tuple[str, BenchmarkProfile]] = ()
    host: perf.HostCosts | None = None
    api_server_count: int = 0  # 0: PLANNED_API_SERVERS; the count the estimate may assume (with host=None)


def unservable_reason(measured: Sequence[tuple[str, BenchmarkProfile]]) -> str | None:
    """Why the benchmark refused to serve this variant on this device, if a profile says it did."""
    for source, profile in measured:
        if profile.unservable:
            return f"not servable on {profile.device.name}: {profile.unservable} (benchmark record {source})"
    return None


def _with_band(capacity: perf.Capacity, efficiency: perf.Efficiency, errors: bands.ValidationErrors) -> perf.Capacity:
    if capacity.capacity_rps <= 0 or capacity.low_rps is not None:
        return capacity
    kind = "calibrated" if efficiency.points > 0 else "prior"
    low, high, how = bands.estimated_band(capacity.capacity_rps, kind, errors)
    return replace(capacity, low_rps=low, high_rps=high, band=how)


def _measured(r: OptionRequest, shape: perf.RequestShape, slo: dict[str, float],
              estimate: perf.Capacity) -> perf.Capacity | None:
    """The measured capacity of the matching profiles (same request shape), newest first; older measurements of
    the same load widen its band. None when no profile matches the shape."""
    matching = sorted(((src, p) for src, p in r.measured if not p.unservable and _same_shape(p, r.arch, shape)),
                      key=lambda item: item[1].finished or item[1].started or "", reverse=True)
    if not matching:
        return None
    caps = [perf.measured_capacity(p, slo, src) for src, p in matching]
    m = caps[0]
    if m.capacity_rps > 0 and len(caps) > 1:
        repeats = [c.capacity_rps for c in caps[1:] if c.capacity_rps > 0]
        spread = bands.relative_spread([m.capacity_rps, *repeats])
        if spread is not None:
            low = m.capacity_rps * max(1 - bands.Z_95 * spread, 0.0)
            if m.low_rps is None or low < m.low_rps:
                m = replace(m, low_rps=low, high_rps=m.capacity_rps * (1 + bands.Z_95 * spread),
                            band=f"+-{bands.Z_95 * spread:.1%} (95%, {len(caps)} profiles of this load)")
    return replace(m, at_capacity=estimate.at_capacity, at_zero_load=estimate.at_zero_load,
                   reason=m.reason or estimate.reason, binding_key=estimate.binding_key,
                   extra={"estimated_capacity_rps": estimate.capacity_rps})


def evaluate_options(requests: Sequence[OptionRequest], efficiency: perf.Efficiency,
                     errors: bands.ValidationErrors | None = None) -> list[OptionEval]:
    """Memory fit, capacity at the SLO (measured where a profile matches, else the model) with its error band, and
    vLLM arguments for many options. Services of the same shape share their memory fits and model costs, and every
    estimated capacity is found in one vectorised bisection (perf.estimate_capacities)."""
    errors = errors if errors is not None else bands.load_validation_errors()
    shares: dict[tuple[str, str], perf.DeviceShare] = {}
    shapes: dict[int, perf.RequestShape] = {}
    fits: dict[tuple, memory.MemoryFit] = {}
    costs: dict[tuple, perf.ModelCost] = {}
    provenances: dict[tuple[str, str, str], Provenance] = {}
    hosts: dict[tuple, perf.HostCosts] = {}
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
                source=f"vlmopt performance model ({efficiency.source}: {efficiency.describe()})",
                detail=f"{r.gpu.id} {r.slice}, {r.variant.scheme}",
            )
        prov = provenances[prov_key]
        refused = unservable_reason(r.measured)
        if refused:
            refused_prov = next((p.provenance for _, p in r.measured if p.unservable and p.provenance), None) or prov
            prepared.append((r, fit, None, 0, batched, perf.Capacity(0.0, False, refused_prov, reason=refused)))
            continue
        if not fit.fits:
            prepared.append((r, fit, None, 0, batched, perf.Capacity(0.0, False, prov, reason=fit.reason)))
            continue
        max_batch = max(1, min(fit.max_num_seqs_suggestion, MAX_NUM_SEQS_CAP))
        kv_seqs = fit.kv_token_capacity / max(shape.max_context, 1)
        cost_key = (r.arch.name, r.variant.scheme, r.variant.bytes_on_disk, r.gpu.id)
        if cost_key not in costs:
            costs[cost_key] = model_cost(r.arch, r.variant, r.gpu)
        servers = r.api_server_count or PLANNED_API_SERVERS
        host_key = (r.arch.family, id(r.service), tuple(id(p) for _, p in r.measured), servers)
        if r.host is not None:
            host_costs = r.host
        elif host_key in hosts:
            host_costs = hosts[host_key]
        else:
            size = tuple(r.service.image_size) if r.service.images_per_request else None
            host_costs = hosts[host_key] = host_model.host_costs_for(r.arch.family, size,
                                                                     [p for _, p in r.measured], servers)
        prepared.append((r, fit, len(queries), max_batch, batched, None))
        queries.append(perf.CapacityQuery(costs[cost_key], shape, share, slo, min(max_batch, kv_seqs), prov,
                                          host_costs, batched))
    estimated = perf.estimate_capacities(queries, efficiency)
    out = []
    for r, fit, q, max_batch, batched, capacity in prepared:
        if q is None:
            out.append(OptionEval(r.service.name, r.variant.name, r.gpu.id, r.slice, fit, capacity, 0))
            continue
        shape, slo = shapes[id(r.service)], slos[id(r.service)]
        estimate = _with_band(estimated[q], efficiency, errors)
        capacity = _measured(r, shape, slo, estimate) or estimate  # measured wins over the estimate
        out.append(OptionEval(r.service.name, r.variant.name, r.gpu.id, r.slice, fit, capacity, max_batch,
                              (r.service, r.variant, batched), queries[q].host, shape))
    return out


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


def profile_shape(arch: ModelArch, profile: BenchmarkProfile) -> perf.RequestShape:
    """The request shape a profile measured (its first image size; 448x448 when it recorded none)."""
    w = profile.workload
    size = tuple(w.image_sizes[0]) if w.image_sizes else (448, 448)
    return request_shape(arch, w.input_tokens or 1, w.output_tokens or 1, w.images_per_request, size)


def profile_batching(profile: BenchmarkProfile, share: perf.DeviceShare, shape: perf.RequestShape,
                     cpu: bool) -> tuple[float, int]:
    """(max_num_seqs, max_num_batched_tokens) the profiled server ran with: its arguments, else vLLM's defaults."""
    args = profile.engine.server_args
    seqs_default, tokens_default = memory.vllm_default_batching(share.memory_gib, profile.device.name, cpu=cpu)
    seqs = (args.max_num_seqs if args and args.max_num_seqs else None) or seqs_default
    tokens = (args.max_num_batched_tokens if args and args.max_num_batched_tokens else None) or tokens_default
    return float(seqs), int(tokens)


def observations_for(profile: BenchmarkProfile, arch: ModelArch, variant: VariantChoice, gpu: GpuSpec,
                     host: perf.HostCosts | None = None) -> list[perf.Observation]:
    """A measured profile's clean load points as observations for `perf.fit_efficiency`, with the host costs the
    profile measured (or `host`), the server's batching limits, and the device share it ran on."""
    share, _ = share_of(gpu, profile.device.mig_profile or WHOLE)
    shape = profile_shape(arch, profile)
    size = tuple(profile.workload.image_sizes[0]) if profile.workload.image_sizes else None
    if host is None:
        host = host_model.host_costs_for(arch.family, size if shape.images_per_request else None, [profile])
    max_batch, budget = profile_batching(profile, share, shape, cpu=profile.device.kind == "cpu")
    return perf.observations_from_profile(profile, model_cost(arch, variant, gpu), shape, share, max_batch, host,
                                          budget)
