"""Memory fit: does a model variant fit a GPU or MIG slice at a max_model_len, and how many KV tokens are left?

Pure functions, no I/O. The budget follows vLLM: the process may use `memory_gib x gpu_memory_utilization`; out of
it come the weights, a runtime reserve (activations of the profiling forward pass, CUDA graphs, the CUDA context,
the vision encoder's profiling pass), and what is left becomes KV cache.

Runtime reserve (an estimate; every figure from it is labelled estimated; override with `runtime_reserve_gib`):

    reserve = 0.75 GiB                                   CUDA context, cuBLAS workspaces, allocator slack
            + 0.5 GiB                                    CUDA graphs (vLLM captures them unless --enforce-eager)
            + T x (2 x intermediate + 4 x hidden) x 2 B  decoder activations of one step over T batched tokens
            + S x vocab x 4 B                            fp32 logits of S sequences sampled in one step
            + T x vision_hidden x merge^2 x 6 x 2 B      vision encoder activations on T tokens' worth of patches

with T = max_num_batched_tokens (vLLM's default: 8192 on GPUs with >= 70 GiB, else 2048; vllm PRs #12369, #17073,
#17885) and S = min(max_num_seqs, 256). Weights: bytes on disk when known, else parameters x bits per scheme
(`weight_bytes`). KV cache per token: 2 (K and V) x layers x kv_heads x head_dim x dtype bytes.
"""

from __future__ import annotations

import math

from pydantic import Field

from vlmopt.hw.models import ModelArch
from vlmopt.schemas.common import StrictModel

GIB = 1024**3
KV_BLOCK_TOKENS = 16  # vLLM allocates KV cache in blocks of 16 tokens
MAX_NUM_SEQS_CAP = 256  # vLLM's default --max-num-seqs; suggesting more rarely helps latency

CONTEXT_RESERVE_GIB = 0.75
CUDA_GRAPH_RESERVE_GIB = 0.5
LARGE_GPU_GIB = 70.0

# Bits per quantized Linear weight, scales and zero points included (compressed-tensors layouts):
# FP8_DYNAMIC and W8A8: 8-bit weights + one bf16 scale per output channel (counted separately, per channel);
# W4A16: 4-bit weights + one bf16 scale per group of 128 -> 4 + 16/128 bits;
# W4A16_ASYM: also one 4-bit zero point per group -> 4 + (16 + 4)/128 bits.
GROUP_SIZE = 128
_WEIGHT_BITS = {
    "BF16": 16.0,
    "FP8_DYNAMIC": 8.0,
    "W8A8": 8.0,
    "W4A16": 4.0 + 16.0 / GROUP_SIZE,
    "W4A16_ASYM": 4.0 + (16.0 + 4.0) / GROUP_SIZE,
}
_PER_CHANNEL_SCALE_BYTES = {"FP8_DYNAMIC": 2, "W8A8": 2}
SCHEMES = tuple(_WEIGHT_BITS)


class MemoryFit(StrictModel):
    """Result of `fit_memory`; GiB = 2^30 bytes."""

    fits: bool
    scheme: str
    memory_gib: float = Field(description="device or MIG slice memory the fit was computed for")
    gpu_memory_utilization: float
    usable_gib: float = Field(description="memory_gib x gpu_memory_utilization: what vLLM may use")
    weights_gib: float
    reserve_gib: float
    kv_cache_gib: float = Field(description="usable - weights - reserve (negative when nothing is left)")
    kv_bytes_per_token: int
    kv_token_capacity: int
    max_model_len: int
    max_num_seqs_suggestion: int
    weights_source: str = Field(description="'bytes on disk' (measured) or 'parameters x bits' (estimated)")
    reserve_source: str = Field(description="'user' or 'estimated (vlmopt.plan.memory reserve formula)'")
    reason: str = ""

    def breakdown(self) -> dict[str, float]:
        """The shape Replica.memory_gib expects: weights, kv_cache, reserve, total, usable."""
        kv = max(self.kv_cache_gib, 0.0)
        return {
            "weights": round(self.weights_gib, 3),
            "kv_cache": round(kv, 3),
            "reserve": round(self.reserve_gib, 3),
            "total": round(self.weights_gib + kv + self.reserve_gib, 3),
            "usable": round(self.usable_gib, 3),
        }


def kv_bytes_per_token(arch: ModelArch, kv_dtype_bytes: float = 2) -> int:
    """2 (K and V) x decoder layers with a KV cache x KV heads x head_dim x bytes per element."""
    return round(2 * arch.kv_layers * arch.num_kv_heads * arch.head_dim * kv_dtype_bytes)


def _check_scheme(scheme: str) -> str:
    if scheme not in _WEIGHT_BITS:
        raise ValueError(f"unknown quantization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return scheme


def weight_bytes(arch: ModelArch, scheme: str, bytes_on_disk: int | None = None) -> int:
    """Bytes the weights take on the device.

    With `bytes_on_disk` (the variant manifest's measured size) that is the answer: safetensors load 1:1.
    Otherwise: decoder Linear weights at the scheme's bits (scales and zero points included); embeddings, lm_head,
    norms, the vision tower and the projector stay bf16, as vlmopt's recipes keep them (docs/quantize.md).
    """
    _check_scheme(scheme)
    if bytes_on_disk is not None:
        if bytes_on_disk <= 0:
            raise ValueError(f"bytes_on_disk must be positive, got {bytes_on_disk}")
        return int(bytes_on_disk)
    linear = arch.decoder_linear_params()
    kept_bf16 = arch.total_params - linear
    quantized_bytes = linear * _WEIGHT_BITS[scheme] / 8
    scale_bytes = arch.num_layers * sum(out for _, out in arch.decoder_linears()) * _PER_CHANNEL_SCALE_BYTES.get(
        scheme, 0
    )
    return math.ceil(kept_bf16 * 2 + quantized_bytes + scale_bytes)


def default_max_num_batched_tokens(memory_gib: float) -> int:
    """vLLM's default chunked-prefill budget: 8192 tokens on >= 70 GiB GPUs, 2048 otherwise (vllm PR #17885)."""
    return 8192 if memory_gib >= LARGE_GPU_GIB else 2048


def vllm_default_batching(memory_gib: float, device_name: str = "", cpu: bool = False) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) vLLM 0.32's API server picks when neither is given
    (vllm/engine/arg_utils.py `get_batch_defaults`): >= 160 GiB GPUs 1024 / 16384; >= 70 GiB GPUs other than A100
    1024 / 8192 (a larger budget lowered A100 throughput, vllm PR #17885); other GPUs 256 / 2048; CPU 128 / 2048.
    Older vLLM versions used 256 sequences everywhere."""
    if cpu:
        return 128, 2048
    if memory_gib >= 160:
        return 1024, 16384
    if memory_gib >= LARGE_GPU_GIB and "a100" not in device_name.lower():
        return 1024, 8192
    return 256, 2048


def runtime_reserve_bytes(arch: ModelArch, max_num_batched_tokens: int, max_num_seqs: int = MAX_NUM_SEQS_CAP) -> int:
    """The reserve formula in this module's docstring, in bytes."""
    tokens = max_num_batched_tokens
    decoder = tokens * (2 * arch.intermediate_size + 4 * arch.hidden_size) * 2
    logits = min(max_num_seqs, MAX_NUM_SEQS_CAP) * arch.vocab_size * 4
    merge = arch.image_token_rule.merge_size
    vision = tokens * arch.vision.hidden_size * merge * merge * 6 * 2 if arch.vision else 0
    fixed = (CONTEXT_RESERVE_GIB + CUDA_GRAPH_RESERVE_GIB) * GIB
    return int(fixed + decoder + logits + vision)


def fit_memory(
    arch: ModelArch,
    scheme: str,
    memory_gib: float,
    max_model_len: int,
    gpu_memory_utilization: float = 0.9,
    bytes_on_disk: int | None = None,
    runtime_reserve_gib: float | None = None,
    kv_dtype_bytes: float = 2,
    max_num_batched_tokens: int | None = None,
    expected_tokens_per_seq: int | None = None,
) -> MemoryFit:
    """Fit a variant into `memory_gib` (a whole GPU's NVML total or a MIG profile's usable GiB).

    Fits when the KV cache left over holds at least one `max_model_len` sequence (vLLM refuses to start
    otherwise). `max_num_seqs_suggestion` = KV tokens / tokens per sequence (`expected_tokens_per_seq`, default
    `max_model_len`), capped at 256; 0 when it does not fit.
    """
    _check_scheme(scheme)
    if memory_gib <= 0:
        raise ValueError(f"memory_gib must be positive, got {memory_gib}")
    if max_model_len < 1:
        raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")

    usable = memory_gib * gpu_memory_utilization
    weights = weight_bytes(arch, scheme, bytes_on_disk) / GIB
    batched = max_num_batched_tokens or default_max_num_batched_tokens(memory_gib)
    if runtime_reserve_gib is not None:
        reserve, reserve_source = float(runtime_reserve_gib), "user"
    else:
        reserve = runtime_reserve_bytes(arch, batched) / GIB
        reserve_source = "estimated (vlmopt.plan.memory reserve formula)"
    kv_gib = usable - weights - reserve
    per_token = kv_bytes_per_token(arch, kv_dtype_bytes)
    capacity = 0
    if kv_gib > 0:
        blocks = int(kv_gib * GIB // (per_token * KV_BLOCK_TOKENS))
        capacity = blocks * KV_BLOCK_TOKENS

    fits = capacity >= max_model_len
    per_seq = max(1, expected_tokens_per_seq or max_model_len)
    suggestion = min(MAX_NUM_SEQS_CAP, capacity // per_seq) if fits else 0

    reason = ""
    if weights > usable:
        reason = (f"the {scheme} weights need {weights:.2f} GiB but only {usable:.2f} GiB is usable "
                  f"({memory_gib:.2f} GiB x {gpu_memory_utilization})")
    elif kv_gib <= 0:
        reason = (f"weights {weights:.2f} GiB + runtime reserve {reserve:.2f} GiB leave no room for the KV cache "
                  f"in {usable:.2f} GiB usable")
    elif not fits:
        need = max_model_len * per_token / GIB
        reason = (f"the KV cache left ({kv_gib:.2f} GiB) holds {capacity} tokens, fewer than max_model_len "
                  f"{max_model_len} (one full-length sequence needs {need:.2f} GiB)")

    return MemoryFit(
        fits=fits,
        scheme=scheme,
        memory_gib=memory_gib,
        gpu_memory_utilization=gpu_memory_utilization,
        usable_gib=usable,
        weights_gib=weights,
        reserve_gib=reserve,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token=per_token,
        kv_token_capacity=capacity,
        max_model_len=max_model_len,
        max_num_seqs_suggestion=suggestion,
        weights_source="bytes on disk" if bytes_on_disk is not None else "parameters x bits (estimated)",
        reserve_source=reserve_source,
        reason=reason,
    )


__all__ = [
    "SCHEMES",
    "MemoryFit",
    "default_max_num_batched_tokens",
    "fit_memory",
    "kv_bytes_per_token",
    "runtime_reserve_bytes",
    "vllm_default_batching",
    "weight_bytes",
]
