"""What serving one request costs a replica: the model's costs from its architecture and format, the request's
shape, the device share, the engine's calibration (roofline efficiencies and overheads) and the API server's host
costs, with the priors used where nothing was measured (docs/cost-model.md#the-performance-model)."""

from __future__ import annotations

from dataclasses import dataclass

from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec

# Priors used when no measured profile calibrates the model; each is labelled a prior wherever it is used.
# Decode kernels reach well under peak HBM bandwidth and prefill well under peak FLOPS: round, cautious numbers.
PRIOR_BANDWIDTH_EFFICIENCY = 0.6
PRIOR_COMPUTE_EFFICIENCY = 0.4
# Engine overheads on a GPU: the scheduler, input preparation and sampling that async scheduling cannot hide. vLLM
# measured 4-13 ms of GPU bubble per decode step before it overlapped them (vllm#6854, vllm#10634); V1's async
# scheduling (vllm PR #19970, #23569) hides most of it. 1 ms per step and 20 us per running sequence per step
# (output processing grows with the batch: 3.4 ms at batch 32 in vllm#6913) are what is left; 2 ms to admit a
# request (hand-off from the API server, block allocation, multimodal inputs).
PRIOR_STEP_S = 1.0e-3
PRIOR_STEP_SEQ_S = 20e-6
PRIOR_ENGINE_REQUEST_S = 2.0e-3
# The part of each overhead that grows with the decoder's layers (per-layer kernel dispatch and attention metadata):
# on a GPU CUDA graphs replay a step's kernels at once, so the prior puts it all in the fixed part (a negligible
# per-layer prior, which a fit across models of several depths can raise).
PRIOR_STEP_LAYER_S = 1e-9
PRIOR_STEP_SEQ_LAYER_S = 1e-11
# Host priors, per request and per output token in the API server (docs/cost-model.md#host-costs): used only when
# no benchmark measured them on the serving host.
PRIOR_HOST_REQUEST_S = 3.0e-3
PRIOR_HOST_OUTPUT_TOKEN_S = 50e-6


@dataclass(frozen=True)
class ModelCost:
    """What serving costs the device, from the architecture and the variant's format."""

    decode_weight_bytes: float  # language-model weights read once per decode step
    kv_bytes_per_token: float
    lm_params: float
    vision_params: float
    attention_width: float  # num_layers x num_heads x head_dim: sets the quadratic attention FLOPs
    compute_dtype: str = "bf16"  # which TFLOPS figure the variant's matmuls run at
    vision_attention_width: float = 0.0  # encoder layers x encoder width: attention FLOPs within each tile
    layers: int = 0  # decoder layers: the engine overheads' per-layer parts scale with them


@dataclass(frozen=True)
class RequestShape:
    input_tokens: int
    output_tokens: int
    images_per_request: int = 0
    image_tokens: int = 0  # language-model tokens per image
    vision_patches: int = 0  # vision-encoder patches per image, every tile summed (before any merge)
    vision_tiles: int = 1  # separate encoder inputs per image (crops, tiles, thumbnails)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.images_per_request * self.image_tokens

    @property
    def mean_context(self) -> float:
        return self.prompt_tokens + self.output_tokens / 2

    @property
    def max_context(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class DeviceShare:
    """The part of a GPU one replica gets: the whole GPU or one MIG instance."""

    gpu: str
    slice: str
    bandwidth_gbs: float
    tflops: dict[str, float]
    memory_gib: float

    def flops_per_s(self, dtype: str) -> float:
        tf = self.tflops.get(dtype) or self.tflops.get("bf16") or self.tflops.get("fp16")
        if not tf:
            raise ValueError(f"{self.gpu}: no TFLOPS figure for {dtype!r} or bf16")
        return tf * 1e12


def device_share(gpu: GpuSpec, profile: MigProfileSpec | None = None) -> DeviceShare:
    if profile is None:
        return DeviceShare(gpu.id, "whole", gpu.memory_bandwidth_gbs, dict(gpu.tflops), gpu.memory_gib)
    if gpu.mig is None:
        raise ValueError(f"{gpu.id} has no MIG geometry")
    compute = profile.compute_slices / gpu.mig.compute_slices
    memory = profile.memory_slices / gpu.mig.memory_slots
    return DeviceShare(
        gpu.id,
        profile.name,
        gpu.memory_bandwidth_gbs * memory,
        {k: v * compute for k, v in gpu.tflops.items()},
        profile.memory_gib,
    )


@dataclass(frozen=True)
class Efficiency:
    """The engine side's calibration: roofline efficiencies and engine overheads (fitted, or priors)."""

    bandwidth: float = PRIOR_BANDWIDTH_EFFICIENCY
    compute: float = PRIOR_COMPUTE_EFFICIENCY
    source: str = "prior"  # "prior" or "fitted to N load points of M profiles"
    mape: float | None = None  # mean absolute percentage error against the measured points it was fitted to
    mape_prior: float | None = None
    points: int = 0
    step_s: float = PRIOR_STEP_S  # engine overhead per step
    step_seq_s: float = PRIOR_STEP_SEQ_S  # engine overhead per running sequence per step
    request_s: float = PRIOR_ENGINE_REQUEST_S  # engine overhead per admitted request
    step_layer_s: float = PRIOR_STEP_LAYER_S  # engine overhead per step per decoder layer
    step_seq_layer_s: float = PRIOR_STEP_SEQ_LAYER_S  # per running sequence per step per decoder layer

    def step_overhead(self, layers: int) -> float:
        """Engine seconds per step, whatever the batch, for a decoder of `layers` layers."""
        return self.step_s + self.step_layer_s * layers

    def seq_overhead(self, layers: int) -> float:
        """Engine seconds per running sequence per step, for a decoder of `layers` layers."""
        return self.step_seq_s + self.step_seq_layer_s * layers

    def describe(self) -> str:
        per_layer = ""
        if self.step_layer_s > 1e-6 or self.step_seq_layer_s > 1e-7:
            per_layer = (f" (+ {self.step_layer_s * 1e3:.2f} ms and {self.step_seq_layer_s * 1e6:.0f} us/seq per "
                         "decoder layer)")
        return (f"bandwidth x{self.bandwidth:.3g}, compute x{self.compute:.3g}, step {self.step_s * 1e3:.2f} ms "
                f"+ {self.step_seq_s * 1e6:.0f} us/seq{per_layer}, admission {self.request_s * 1e3:.2f} ms")


@dataclass(frozen=True)
class HostCosts:
    """CPU seconds vLLM's API server spends per request, outside the engine (docs/cost-model.md#host-costs)."""

    request_s: float = PRIOR_HOST_REQUEST_S  # HTTP/JSON, chat template, tokenisation, hand-off to the engine
    image_s: float = 0.0  # fetch + decode + the model's processor, per image of the request's size
    output_token_s: float = PRIOR_HOST_OUTPUT_TOKEN_S  # detokenise and stream one token
    api_server_count: int = 1
    source: str = "prior"
    # vLLM before V1 (the default from 0.8.0) ran the multimodal processor in the engine process, serially with the
    # model's steps, not in the API server (docs/cost-model.md#host-costs).
    preprocess_in_engine: bool = False
    # Share of the API server's runnable time it waited for a core on the measured host (0: it never waited): its
    # work before the engine takes 1 / (1 - share) of its CPU seconds in wall time.
    cpu_wait_share: float = 0.0

    def seconds_per_request(self, shape: RequestShape) -> float:
        """API-server CPU seconds one request of `shape` costs, start to finish."""
        return self.pre_engine_s(shape) + shape.output_tokens * self.output_token_s

    def pre_engine_s(self, shape: RequestShape) -> float:
        images = 0.0 if self.preprocess_in_engine else shape.images_per_request * self.image_s
        return self.request_s + images

    def pre_engine_wall_s(self, shape: RequestShape) -> float:
        """Wall seconds from a request reaching the API server to the engine having it, on the measured host."""
        return self.pre_engine_s(shape) / (1.0 - min(max(self.cpu_wait_share, 0.0), 0.9))

    def engine_preprocess_s(self, shape: RequestShape) -> float:
        return shape.images_per_request * self.image_s if self.preprocess_in_engine else 0.0

    def rate_cap(self, shape: RequestShape) -> float:
        """Requests/s the API servers can handle at all: api_server_count / CPU seconds per request."""
        return self.api_server_count / max(self.seconds_per_request(shape), 1e-12)


NO_HOST = HostCosts(request_s=0.0, image_s=0.0, output_token_s=0.0, api_server_count=1, source="not modelled")


def prefill_seconds(cost: ModelCost, shape: RequestShape, share: DeviceShare, eff: Efficiency) -> float:
    """Engine seconds of one request's prefill and vision encoding (admission overhead included)."""
    n = shape.prompt_tokens
    flops = 2 * cost.lm_params * n + 2 * cost.attention_width * n * n  # QK^T and AV over a causal half-square
    images = shape.images_per_request
    flops += 2 * cost.vision_params * images * shape.vision_patches
    per_tile = shape.vision_patches / max(shape.vision_tiles, 1)
    flops += 4 * cost.vision_attention_width * images * shape.vision_tiles * per_tile**2  # full attention per tile
    return flops / (share.flops_per_s(cost.compute_dtype) * eff.compute) + eff.request_s


def decode_step_seconds(
    cost: ModelCost, shape: RequestShape, share: DeviceShare, eff: Efficiency, batch: float
) -> float:
    memory = (cost.decode_weight_bytes + batch * shape.mean_context * cost.kv_bytes_per_token) / (
        share.bandwidth_gbs * 1e9 * eff.bandwidth
    )
    compute = 2 * cost.lm_params * batch / (share.flops_per_s(cost.compute_dtype) * eff.compute)
    return eff.step_overhead(cost.layers) + eff.seq_overhead(cost.layers) * batch + max(memory, compute)

