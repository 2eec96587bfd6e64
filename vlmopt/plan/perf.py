"""Performance model: latency percentiles as a function of load, and capacity at the SLO, for one replica.

Two sources, in order of preference:
1. measured: a `vlmopt benchmark` profile of the same variant on the same device (and GPU slice). Capacity is the
   highest measured request throughput whose load point met every SLO key (no interpolation beyond measured points).
2. estimated: the model below, with its engine overheads and roofline efficiencies fitted to whatever measured
   profiles exist (`fit_efficiency`), its host costs measured by the benchmark (`HostCosts`), priors otherwise.

The model (docs/cost-model.md#the-performance-model has the sources and the validation):

Host, in vLLM's API server process(es) (`HostCosts`): per request `request_s` (HTTP/JSON, chat template,
tokenisation), `image_s` per image (fetch, decode, the model's own processor) before the engine sees it, and
`output_token_s` per streamed token (detokenise, SSE). vLLM runs multimodal preprocessing on one thread per API
server, so the API servers cap the request rate at api_server_count / (their CPU seconds per request) whatever the
accelerator does; below the cap a request waits for them as in an M/M/c queue.

Engine, one step at a time (continuous batching with chunked prefill):
- a decode step with b running sequences takes t_dec(b) = step_s + step_seq_s x b + max(weights + b x context x
  KV bytes per token over the share's bandwidth x bandwidth efficiency, 2 x LM params x b over its FLOPS x compute
  efficiency): engine overheads (scheduler, input preparation, sampling: `Efficiency.step_s`, `step_seq_s`) plus the
  roofline;
- prefill and vision encoding are work G per request: `Efficiency.request_s` (admission) + (2 x LM params x prompt
  tokens + the quadratic attention term + 2 x vision params x encoder patches + the encoder's attention within each
  tile) over FLOPS x compute efficiency. At throughput X they take the share rho = X x G of the engine's time;
- the mean step is t = t_dec(b) / (1 - rho), and each request spends its O-1 decode steps in the batch, so
  b = X (O-1) t (Little's law; closed form in the memory-bound regime);
- TPOT p50 = t; p95 at the batch b + 1.645 sqrt(b) (Poisson spread);
- TTFT = host time before the engine (+ its queue) + the rest of the step in flight when the request arrives (half a
  step, if anything else is running) + its prefill G + one step + the prefill work queued ahead of it (an M/D/1
  queue of utilisation rho, wait quantiles from its exponential tail) + one more step per extra chunk when the
  prompt exceeds the `max_num_batched_tokens` budget left beside the decode batch;
- E2EL = TTFT + (O-1) x TPOT.

Open loop (Poisson arrivals at rate X) is what capacity at the SLO uses: latencies grow with X, so the capacity is
found by bisection. Closed loop (a benchmark's `max_concurrency` N, requests back to back) solves X x E2EL(X) = N
(Little's law) for X; with N clients nothing queues behind more than N - 1 others, so the queueing terms scale by
(N - 1) / N.

A MIG slice gets compute_slices/7 of the FLOPS and memory_slices/8 of the bandwidth ("memory slice ~ 1/8 of memory
(capacity + bandwidth); SM slice ~ 1/7 of SMs", NVIDIA MIG user guide, docs/cost-model.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy.optimize import least_squares

from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.profile import BenchmarkProfile, LoadPoint

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
# Host priors, per request and per output token in the API server (docs/cost-model.md#host-costs): used only when
# no benchmark measured them on the serving host.
PRIOR_HOST_REQUEST_S = 3.0e-3
PRIOR_HOST_OUTPUT_TOKEN_S = 50e-6
Z_95 = 1.6448536269514722
# The API servers bind when the capacity without their queue would be this much higher.
HOST_BINDING_MARGIN = 0.02

SLO_KEYS = ("ttft_p50_ms", "ttft_p95_ms", "tpot_p95_ms", "e2el_p50_ms", "e2el_p95_ms")
# Workload SLO key -> the `vllm bench serve` result key of the same percentile (docs/benchmark.md).
SLO_TO_LOADPOINT = {
    "ttft_p50_ms": "median_ttft_ms",
    "ttft_p95_ms": "p95_ttft_ms",
    "tpot_p95_ms": "p95_tpot_ms",
    "e2el_p50_ms": "median_e2el_ms",
    "e2el_p95_ms": "p95_e2el_ms",
}


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

    def describe(self) -> str:
        return (f"bandwidth x{self.bandwidth:.3g}, compute x{self.compute:.3g}, step {self.step_s * 1e3:.2f} ms "
                f"+ {self.step_seq_s * 1e6:.0f} us/seq, admission {self.request_s * 1e3:.2f} ms")


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

    def seconds_per_request(self, shape: RequestShape) -> float:
        """API-server CPU seconds one request of `shape` costs, start to finish."""
        return self.pre_engine_s(shape) + shape.output_tokens * self.output_token_s

    def pre_engine_s(self, shape: RequestShape) -> float:
        images = 0.0 if self.preprocess_in_engine else shape.images_per_request * self.image_s
        return self.request_s + images

    def engine_preprocess_s(self, shape: RequestShape) -> float:
        return shape.images_per_request * self.image_s if self.preprocess_in_engine else 0.0

    def rate_cap(self, shape: RequestShape) -> float:
        """Requests/s the API servers can handle at all: api_server_count / CPU seconds per request."""
        return self.api_server_count / max(self.seconds_per_request(shape), 1e-12)


NO_HOST = HostCosts(request_s=0.0, image_s=0.0, output_token_s=0.0, api_server_count=1, source="not modelled")


@dataclass(frozen=True)
class Prediction:
    rate_rps: float
    batch: float
    prefill_utilisation: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    e2el_p50_ms: float
    e2el_p95_ms: float
    host_utilisation: float = 0.0

    def value(self, slo_key: str) -> float:
        return float(getattr(self, slo_key))


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
    return eff.step_s + eff.step_seq_s * batch + max(memory, compute)


@dataclass(frozen=True)
class _Coefficients:
    """Per replica, the few numbers the latency model needs (arrays, one entry per replica option)."""

    prefill_s: np.ndarray  # G: prefill + vision + admission seconds per request
    step_base_s: np.ndarray  # a: step overhead + one decode step's weight reads
    step_per_seq_memory_s: np.ndarray  # k_m: per-sequence overhead + KV reads per sequence in the batch
    step_per_seq_compute_s: np.ndarray  # k_c: matmul time per sequence in the batch
    step_overhead_s: np.ndarray  # the engine overhead part of a and k_c's regime: step_s, step_seq_s
    step_seq_overhead_s: np.ndarray
    output_tokens: np.ndarray
    max_batch: np.ndarray
    host_pre_s: np.ndarray  # API-server seconds before the engine
    host_total_s: np.ndarray  # API-server seconds per request in all
    host_token_s: np.ndarray  # API-server seconds per output token
    api_servers: np.ndarray
    prompt_tokens: np.ndarray
    chunk_budget: np.ndarray  # max_num_batched_tokens (inf: no chunking)

    @classmethod
    def of(
        cls,
        items: Sequence[tuple[ModelCost, RequestShape, DeviceShare, float]],
        eff: Efficiency,
        hosts: Sequence[HostCosts] | None = None,
        budgets: Sequence[float | None] | None = None,
    ) -> _Coefficients:
        rows = []
        for i, (cost, shape, share, max_batch) in enumerate(items):
            host = hosts[i] if hosts is not None else NO_HOST
            budget = budgets[i] if budgets is not None else None
            bw = share.bandwidth_gbs * 1e9 * eff.bandwidth
            flops = share.flops_per_s(cost.compute_dtype) * eff.compute
            rows.append((
                prefill_seconds(cost, shape, share, eff) + host.engine_preprocess_s(shape),
                eff.step_s + cost.decode_weight_bytes / bw,
                eff.step_seq_s + shape.mean_context * cost.kv_bytes_per_token / bw,
                eff.step_seq_s + 2 * cost.lm_params / flops,
                eff.step_s,
                eff.step_seq_s,
                float(shape.output_tokens),
                float(max_batch),
                host.pre_engine_s(shape),
                host.seconds_per_request(shape),
                host.output_token_s,
                float(host.api_server_count),
                float(shape.prompt_tokens),
                float(budget) if budget else math.inf,
            ))
        cols = np.array(rows, dtype=float).reshape(len(rows), 14).T
        return cls(*cols)


def _wait_quantiles(rho: np.ndarray, mean_wait: np.ndarray, q: float) -> np.ndarray:
    """Exponential tail of a queue's wait: P(W > t) ~ rho exp(-t rho / mean wait), 0 below the atom at zero."""
    positive = (rho > 1 - q) & (mean_wait > 0) & (rho > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(positive, (mean_wait / rho) * np.log(rho / (1 - q)), 0.0)


def _step_time(c: _Coefficients, batch: np.ndarray) -> np.ndarray:
    return np.maximum(c.step_base_s + c.step_per_seq_memory_s * batch,
                      c.step_overhead_s + c.step_per_seq_compute_s * batch)


def _predict_many(
    c: _Coefficients, rate: np.ndarray, concurrency: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model of the module docstring for many replicas at once: (sustainable mask, latencies ms, means s).

    `concurrency` (closed loop, N clients): queueing terms scale by (N - 1) / N; None: open loop (Poisson)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        others = 1.0 if concurrency is None else np.clip((concurrency - 1) / np.maximum(concurrency, 1), 0, 1)
        rho = rate * c.prefill_s
        free = 1 - rho
        decode_steps = np.maximum(c.output_tokens - 1, 0)
        tokens_per_s = rate * decode_steps
        # Mean decode batch b with b x free / t_dec(b) = tokens/s, t_dec(b) = max(a + k_m b, s + k_c b): closed form
        # in each regime, the larger one holds; at or beyond free / max(k_m, k_c) tokens/s no batch keeps up.
        memory_batch = tokens_per_s * c.step_base_s / (free - tokens_per_s * c.step_per_seq_memory_s)
        compute_batch = tokens_per_s * c.step_overhead_s / (free - tokens_per_s * c.step_per_seq_compute_s)
        batch = np.where(tokens_per_s > 0, np.maximum(memory_batch, compute_batch), 0.0)
        feasible = (tokens_per_s * np.maximum(c.step_per_seq_memory_s, c.step_per_seq_compute_s) < free) | (
            tokens_per_s <= 0)
        # API servers: an M/M/c queue's mean wait, approximated per server as M/M/1 at the per-server load.
        host_util = rate * c.host_total_s / c.api_servers
        host_ok = host_util < 1
        host_wait = others * np.where(host_util > 0, c.host_pre_s * host_util / (1 - host_util), 0.0)
        ok = (rho < 1) & feasible & (batch <= c.max_batch) & host_ok
        # What one request sees: while it prefills, the others decoding (b, or b (N-1)/N of N clients); while it
        # decodes, itself and them (a Poisson count seen from inside is one more than its mean).
        beside = batch * others
        seen = np.minimum(c.max_batch, beside + 1)
        step = _step_time(c, beside)
        mean_step = _step_time(c, seen) / free
        batch95 = np.minimum(c.max_batch, seen + Z_95 * np.sqrt(beside))
        step95 = _step_time(c, batch95)
        mean_wait = others * rho * c.prefill_s / (2 * free)
        busy = 1 - np.exp(-beside)  # something else is in the engine when the request arrives
        # Chunked prefill: the budget left beside the decode batch takes the prompt in ceil(P / left) steps.
        left = np.maximum(c.chunk_budget - beside, 1.0)
        extra_chunks = np.where(np.isfinite(c.chunk_budget), np.maximum(np.ceil(c.prompt_tokens / left) - 1, 0), 0)
        ttft_fixed = (c.host_pre_s + busy * step / free / 2 + c.prefill_s + step + extra_chunks * step / free
                      + c.host_token_s)
        host50 = _wait_quantiles(host_util, host_wait, 0.5)
        host95 = _wait_quantiles(host_util, host_wait, 0.95)
        ttft50 = ttft_fixed + _wait_quantiles(rho, mean_wait, 0.5) + host50
        ttft95 = ttft_fixed + _wait_quantiles(rho, mean_wait, 0.95) + host95 + busy * step / free * 0.45
        tpot50 = mean_step
        tpot95 = step95 / free
        ttft_mean = ttft_fixed + mean_wait + host_wait
        out = {
            "rate_rps": np.broadcast_to(rate, rho.shape).astype(float),
            "batch": batch,
            "prefill_utilisation": rho,
            "host_utilisation": host_util,
            "ttft_p50_ms": ttft50 * 1e3,
            "ttft_p95_ms": ttft95 * 1e3,
            "tpot_p50_ms": tpot50 * 1e3,
            "tpot_p95_ms": tpot95 * 1e3,
            "e2el_p50_ms": (ttft50 + decode_steps * tpot50) * 1e3,
            "e2el_p95_ms": (ttft95 + decode_steps * tpot95) * 1e3,
            "_e2el_mean_s": ttft_mean + decode_steps * mean_step,
        }
    return ok, out


def _prediction_at(values: dict[str, np.ndarray], i: int) -> Prediction:
    return Prediction(**{k: float(v[i]) for k, v in values.items() if not k.startswith("_")})


def predict(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    rate_rps: float,
    max_batch: float,
    host: HostCosts = NO_HOST,
    max_num_batched_tokens: int | None = None,
) -> Prediction | None:
    """Latency percentiles at Poisson arrival rate `rate_rps`; None when the replica cannot sustain that rate."""
    coef = _Coefficients.of([(cost, shape, share, max_batch)], eff, [host], [max_num_batched_tokens])
    ok, values = _predict_many(coef, np.array([rate_rps]))
    return _prediction_at(values, 0) if ok[0] else None


def _sustainable_rate(c: _Coefficients) -> np.ndarray:
    """An upper bound of the sustainable rate per option: prefill, API servers, and the decode ceiling."""
    with np.errstate(divide="ignore"):
        prefill = 1 / c.prefill_s
        host = np.where(c.host_total_s > 0, c.api_servers / c.host_total_s, np.inf)
        steps = np.maximum(c.output_tokens - 1, 1)
        decode = 1 / (steps * np.maximum(c.step_per_seq_memory_s, c.step_per_seq_compute_s) + c.prefill_s)
    return np.minimum(np.minimum(prefill, host), decode)


def predict_closed_loop(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    concurrency: int,
    max_batch: float,
    host: HostCosts = NO_HOST,
    max_num_batched_tokens: int | None = None,
) -> Prediction:
    """Throughput and latencies with `concurrency` clients sending back to back (a benchmark's max_concurrency):
    the rate X with X x mean E2EL(X) = N. Requests beyond `max_batch` wait for a free sequence slot."""
    coef = _Coefficients.of([(cost, shape, share, max_batch)], eff, [host], [max_num_batched_tokens])
    return _closed_loop(coef, np.array([float(concurrency)]))[0]


def _closed_loop(coef: _Coefficients, concurrency: np.ndarray) -> list[Prediction]:
    n = concurrency
    running = np.minimum(n, coef.max_batch)
    hi = _sustainable_rate(coef) * (1 - 1e-9)
    lo = np.zeros_like(hi)
    for _ in range(80):
        mid = (lo + hi) / 2
        ok, values = _predict_many(coef, mid, running)
        # Little's law over the clients in the engine; an unsustainable rate is above the answer.
        above = ~ok | (mid * values["_e2el_mean_s"] > running)
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    rate = np.maximum(lo, 1e-12)
    _, values = _predict_many(coef, rate, running)
    # Clients beyond max_batch queue for a slot: each waits (N - running) / X before its request is admitted.
    queued = np.where(n > running, (n - running) / rate, 0.0) * 1e3
    for key in ("ttft_p50_ms", "ttft_p95_ms", "e2el_p50_ms", "e2el_p95_ms"):
        values[key] = values[key] + queued
    return [_prediction_at(values, i) for i in range(len(n))]


def meets(prediction: Prediction, slo: dict[str, float]) -> bool:
    return all(prediction.value(k) <= v for k, v in slo.items())


@dataclass(frozen=True)
class Capacity:
    """Highest request rate one replica sustains with every SLO key met, and where that figure came from.

    `low_rps`/`high_rps` bound it: for an estimate, the model's measured error (`band` says which validation);
    for a measurement, its run-to-run spread."""

    capacity_rps: float
    meets_slo: bool
    provenance: Provenance
    at_capacity: Prediction | None = None
    at_zero_load: Prediction | None = None
    reason: str = ""
    binding_key: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    low_rps: float | None = None
    high_rps: float | None = None
    band: str = ""

    @property
    def low(self) -> float:
        """The capacity at the low end of its band (the capacity itself when no band is known)."""
        return self.capacity_rps if self.low_rps is None else self.low_rps


@dataclass(frozen=True)
class CapacityQuery:
    """One replica option whose capacity at the SLO `estimate_capacities` finds."""

    cost: ModelCost
    shape: RequestShape
    share: DeviceShare
    slo: dict[str, float]
    max_batch: float
    provenance: Provenance
    host: HostCosts = NO_HOST
    max_num_batched_tokens: int | None = None


_BISECTION_TOLERANCE = 1e-4  # relative width of the final rate bracket


def _bisect(coef: _Coefficients, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(searching, lo, hi, idle values): per option the highest rate meeting every SLO limit, by bisection."""

    def meeting(ok: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
        met = ok.copy()
        for j, key in enumerate(SLO_KEYS):
            met &= values[key] <= limit[:, j]
        return met

    idle_ok, idle = _predict_many(coef, np.full(limit.shape[0], 1e-9))
    searching = meeting(idle_ok, idle)
    lo = np.zeros(limit.shape[0])
    hi = _sustainable_rate(coef)
    active = searching & (hi - lo > _BISECTION_TOLERANCE * hi)
    while active.any():
        mid = (lo + hi) / 2
        met = meeting(*_predict_many(coef, mid))
        lo = np.where(active & met, mid, lo)
        hi = np.where(active & ~met, mid, hi)
        active &= hi - lo > _BISECTION_TOLERANCE * hi
    return searching, lo, hi, idle


def _without_host(coef: _Coefficients) -> _Coefficients:
    zero = np.zeros_like(coef.host_pre_s)
    return replace(coef, host_pre_s=zero, host_total_s=zero, host_token_s=zero)


def estimate_capacities(queries: Sequence[CapacityQuery], eff: Efficiency) -> list[Capacity]:
    """Capacity at the SLO of many replica options at once: the bisection on the rate runs on arrays (numpy), every
    option with its own bracket, so that planning a large workload evaluates thousands of options in milliseconds.
    The API servers are the binding limit where taking their queue away would raise the capacity by more than 2 %
    (a second bisection, for the options whose servers are busy at capacity)."""
    out: list[Capacity | None] = [None] * len(queries)
    todo = []
    for i, q in enumerate(queries):
        if q.max_batch < 1:
            out[i] = Capacity(0.0, False, q.provenance, reason="not even one request fits the KV cache")
        else:
            todo.append(i)
    if todo:
        chosen = [queries[i] for i in todo]
        coef = _Coefficients.of([(q.cost, q.shape, q.share, q.max_batch) for q in chosen], eff,
                                [q.host for q in chosen], [q.max_num_batched_tokens for q in chosen])
        limit = np.array([[q.slo.get(k, np.inf) for k in SLO_KEYS] for q in chosen], dtype=float).reshape(-1, 5)
        searching, lo, hi, idle = _bisect(coef, limit)
        at_ok, at = _predict_many(coef, np.where(lo > 0, lo, 1e-9))
        over_ok, over = _predict_many(coef, hi * 1.0001)
        busy_host = searching & (at["host_utilisation"] >= 0.05)
        host_bound = np.zeros(len(chosen), dtype=bool)
        if busy_host.any():
            _, free_lo, _, _ = _bisect(_without_host(coef), limit)
            host_bound = busy_host & (free_lo > lo * (1 + HOST_BINDING_MARGIN))
        for j, i in enumerate(todo):
            q = chosen[j]
            idle_pred = _prediction_at(idle, j)
            if not searching[j]:
                key = next((k for k, v in q.slo.items() if idle_pred.value(k) > v), None)
                if key is None:
                    reason = "cannot sustain any load"
                else:
                    reason = f"{key} is {idle_pred.value(key):.0f} ms at zero load > SLO {q.slo[key]:.0f} ms"
                out[i] = Capacity(0.0, False, q.provenance, at_zero_load=idle_pred, binding_key=key, reason=reason)
                continue
            binding = "throughput"
            if over_ok[j]:
                binding = next((k for k, v in q.slo.items() if float(over[k][j]) > v), "throughput")
            reason = ""
            if host_bound[j]:
                binding = "host"
                reason = (f"the API server(s) bind: {q.host.api_server_count} x 1 / "
                          f"{q.host.seconds_per_request(q.shape) * 1e3:.1f} ms of host CPU per request = "
                          f"{q.host.rate_cap(q.shape):.3g} req/s at most ({q.host.source})")
            capacity = float(lo[j])
            at_cap = _prediction_at(at, j) if capacity > 0 and at_ok[j] else idle_pred
            out[i] = Capacity(capacity, capacity > 0, q.provenance, at_capacity=at_cap, at_zero_load=idle_pred,
                              binding_key=binding, reason=reason)
    return out  # type: ignore[return-value]


def estimate_capacity(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    slo: dict[str, float],
    max_batch: float,
    provenance: Provenance,
    host: HostCosts = NO_HOST,
    max_num_batched_tokens: int | None = None,
) -> Capacity:
    query = CapacityQuery(cost, shape, share, slo, max_batch, provenance, host, max_num_batched_tokens)
    return estimate_capacities([query], eff)[0]


def measured_capacity(profile: BenchmarkProfile, slo: dict[str, float], source: str) -> Capacity:
    """Highest measured request throughput among load points that completed cleanly and met every SLO key; its
    band is the run-to-run spread of that point (`bands.measured_band`)."""
    from .bands import measured_band

    prov = Provenance(
        kind="measured",
        source=source,
        date=(profile.finished or profile.started or None),
        detail=f"run {profile.run_id}" if profile.run_id else None,
    )
    judged = 0
    best: LoadPoint | None = None
    for point in profile.points:
        if point.incomplete or point.failed or point.completed == 0:
            continue
        values = {k: load_point_value(point, k) for k in slo}
        if any(v is None for v in values.values()):
            continue
        judged += 1
        if all(values[k] <= slo[k] for k in slo) and (  # type: ignore[operator]
            best is None or point.request_throughput > best.request_throughput
        ):
            best = point
    if best is None:
        reason = "no load point met the SLO" if judged else "no load point reports the SLO's percentiles"
        return Capacity(0.0, False, prov, reason=reason)
    low, high, how = measured_band(profile, best)
    return Capacity(best.request_throughput, True, prov, reason=f"load point {best.label}", low_rps=low,
                    high_rps=high, band=how)


def load_point_value(point: LoadPoint, key: str) -> float | None:
    """A load point's value for an SLO key (`ttft_p95_ms`) or a result key (`p95_ttft_ms`)."""
    key = SLO_TO_LOADPOINT.get(key, key)
    value = getattr(point, key, None)
    if value is None and point.model_extra:
        value = point.model_extra.get(key)
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Observation:
    """One measured load point with the model inputs that describe it, for fitting the calibration."""

    cost: ModelCost
    shape: RequestShape
    share: DeviceShare
    max_batch: float
    rate_rps: float
    ttft_p50_ms: float | None
    tpot_p50_ms: float | None
    concurrency: int | None = None  # closed loop (max_concurrency) when set, else Poisson at rate_rps
    host: HostCosts = NO_HOST
    max_num_batched_tokens: int | None = None
    ttft_p95_ms: float | None = None
    tpot_p95_ms: float | None = None
    label: str = ""


def observations_from_profile(
    profile: BenchmarkProfile, cost: ModelCost, shape: RequestShape, share: DeviceShare, max_batch: float,
    host: HostCosts | None = None, max_num_batched_tokens: int | None = None,
) -> list[Observation]:
    """Clean load points of a profile as observations. Closed-loop points (max_concurrency, unlimited rate) are
    modelled closed loop; rate points as Poisson at their measured throughput."""
    host = host if host is not None else NO_HOST
    out = []
    for point in profile.points:
        if point.incomplete or point.failed or point.request_throughput <= 0:
            continue
        ttft, tpot = load_point_value(point, "median_ttft_ms"), load_point_value(point, "median_tpot_ms")
        if ttft is None and tpot is None:
            continue
        closed = point.max_concurrency if point.request_rate in (None, "inf", float("inf")) else None
        out.append(Observation(cost, shape, share, max_batch, point.request_throughput, ttft, tpot, closed, host,
                               max_num_batched_tokens, load_point_value(point, "p95_ttft_ms"),
                               load_point_value(point, "p95_tpot_ms"), point.label))
    return out


def predict_observation(o: Observation, eff: Efficiency) -> Prediction | None:
    """The model's prediction for an observation's load: closed loop at its concurrency, else open at its rate."""
    if o.concurrency:
        return predict_closed_loop(o.cost, o.shape, o.share, eff, o.concurrency, o.max_batch, o.host,
                                   o.max_num_batched_tokens)
    return predict(o.cost, o.shape, o.share, eff, o.rate_rps, o.max_batch, o.host, o.max_num_batched_tokens)


def _predict_observations(obs: Sequence[Observation], eff: Efficiency) -> list[Prediction | None]:
    """Predictions for many observations, vectorised where they share nothing but the calibration."""
    out: list[Prediction | None] = [None] * len(obs)
    closed = [i for i, o in enumerate(obs) if o.concurrency]
    if closed:
        coef = _Coefficients.of([(obs[i].cost, obs[i].shape, obs[i].share, obs[i].max_batch) for i in closed], eff,
                                [obs[i].host for i in closed], [obs[i].max_num_batched_tokens for i in closed])
        for i, p in zip(closed, _closed_loop(coef, np.array([float(obs[i].concurrency) for i in closed])),
                        strict=True):
            out[i] = p
    for i, o in enumerate(obs):
        if not o.concurrency:
            out[i] = predict_observation(o, eff)
    return out


# Which measured figures the calibration is fitted to: the medians of TTFT and TPOT, and for closed-loop points
# the throughput the clients got (the model predicts it from the concurrency).
FIT_METRICS = ("ttft_p50_ms", "tpot_p50_ms", "rate_rps")


def _pairs(o: Observation, pred: Prediction | None) -> list[tuple[str, float, float | None]]:
    """(metric, measured, predicted or None when the model finds the load unsustainable)."""
    measured = {"ttft_p50_ms": o.ttft_p50_ms, "tpot_p50_ms": o.tpot_p50_ms,
                "rate_rps": o.rate_rps if o.concurrency else None}
    return [(k, float(v), None if pred is None else pred.value(k)) for k, v in measured.items()
            if v is not None and v > 0]


def _residuals(obs: Sequence[Observation], eff: Efficiency) -> list[float]:
    res: list[float] = []
    for o, pred in zip(obs, _predict_observations(obs, eff), strict=True):
        for _, measured, predicted in _pairs(o, pred):
            # An unsustainable prediction at a load that was in fact measured is a large, finite miss.
            res.append(math.log(predicted / measured) if predicted and predicted > 0 else 5.0)
    return res


def latency_mape(obs: Sequence[Observation], eff: Efficiency) -> float | None:
    errs = [abs(p - m) / m if p is not None else 1.0
            for o, pred in zip(obs, _predict_observations(obs, eff), strict=True) for _, m, p in _pairs(o, pred)]
    return float(np.mean(errs)) if errs else None


# The calibration's free parameters, their bounds, and how strongly each is pulled to its prior when the data say
# little about it (a weak Gaussian prior on its log): the roofline efficiencies have physical upper bounds, the
# overheads may be anywhere from nothing to seconds.
_FREE = ("bandwidth", "compute", "step_s", "step_seq_s", "request_s")
_BOUNDS = {"bandwidth": (1e-4, 1.0), "compute": (1e-4, 1.0), "step_s": (1e-6, 1.0), "step_seq_s": (1e-8, 0.1),
           "request_s": (1e-6, 2.0)}
_PRIOR_WEIGHT = 0.05


def fit_efficiency(obs: Sequence[Observation], profiles: int = 1, prior: Efficiency | None = None) -> Efficiency:
    """Least squares on log(predicted / measured) median TTFT, median TPOT and (closed loop) throughput, over the
    roofline efficiencies and the engine overheads, each weakly held to its prior so that what the observations
    cannot tell apart stays where the prior put it.

    With no observation the priors stay, labelled as such. The fitted calibration's error (MAPE) is reported beside
    the prior's, so a reader sees how much calibration helped and how far off the model still is (in sample; the
    held-out error is what scripts/validate_perf_model.py measures).
    """
    prior = prior or Efficiency()
    if not obs:
        return prior
    mape_prior = latency_mape(obs, prior)
    x0 = np.log([getattr(prior, k) for k in _FREE])
    lower = np.log([_BOUNDS[k][0] for k in _FREE])
    upper = np.log([_BOUNDS[k][1] for k in _FREE])
    x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)

    def calibration(x: np.ndarray) -> Efficiency:
        return replace(prior, **{k: float(math.exp(v)) for k, v in zip(_FREE, x, strict=True)})

    def fun(x: np.ndarray) -> np.ndarray:
        data = np.array(_residuals(obs, calibration(x)))
        return np.concatenate([data, _PRIOR_WEIGHT * (x - x0)])

    fit = least_squares(fun, x0=x0, bounds=(lower, upper), x_scale=1.0)
    fitted = replace(calibration(fit.x), source=f"fitted to {len(obs)} load points of {profiles} measured profile(s)",
                     points=len(obs))
    return replace(fitted, mape=latency_mape(obs, fitted), mape_prior=mape_prior)


def calibration_fields() -> tuple[str, ...]:
    """Names of Efficiency's fitted parameters (for reports)."""
    return tuple(f.name for f in fields(Efficiency) if f.name in _FREE)
