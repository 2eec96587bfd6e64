"""Performance model: latency percentiles as a function of load, and capacity at the SLO, for one replica.

Two sources, in order of preference:
1. measured: a `vlmopt benchmark` profile of the same variant on the same device (and GPU slice). Capacity is the
   highest measured request throughput whose load point met every SLO key (no interpolation beyond measured points).
2. estimated: a roofline of the device share the replica gets, with efficiency factors fitted to whatever measured
   profiles exist (least squares on the log of predicted/measured latency), and priors otherwise.

Roofline (DESIGN.md "Models inside the planner"):
- prefill and vision encoding are compute bound: 2 FLOPs per parameter per token (vision: per patch), plus the
  quadratic attention term, over the share's dense TFLOPS x compute efficiency;
- one decode step at batch b is bound by memory bandwidth: language-model weight bytes + b x context x KV bytes per
  token, over the share's bandwidth x bandwidth efficiency (or by compute, if that is slower);
- a MIG slice gets compute_slices/7 of the FLOPS and memory_slices/8 of the bandwidth: "memory slice ≈ 1/8 of memory
  (capacity + bandwidth ...); SM slice ≈ 1/7 of SMs" (research/planning.md §1.1).

Queueing (an approximation, stated so it can be checked against measurements):
- requests arrive as a Poisson stream at rate λ; prefill work is served one request at a time (an M/D/1 queue with
  utilisation ρ = λ·P, P = prefill + vision seconds), mean wait ρP / (2(1-ρ)) (Pollaczek-Khinchine), and a wait
  quantile from the exponential tail P(W > t) ≈ ρ·exp(-tρ/W̄);
- decode gets the GPU time prefill leaves, 1-ρ; the mean decode batch b solves b(1-ρ)/t(b) = λ·O (token balance,
  O output tokens per request), and must fit the replica's sequence limit and KV cache;
- TPOT p50 = t(b)/(1-ρ); TPOT p95 uses the batch at b + 1.645·sqrt(b) (Poisson spread of requests in decode);
- TTFT_q = P + t(b) + wait_q; E2EL_q = TTFT_q + (O-1)·TPOT_q (p95 adds both tails: an upper bound).
Latencies grow with λ, so the capacity at the SLO is found by bisection on λ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import least_squares

from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec
from vlmopt.schemas.common import Provenance
from vlmopt.schemas.profile import BenchmarkProfile, LoadPoint

# Priors used when no measured profile can calibrate the roofline. Decode kernels typically reach well under peak
# HBM bandwidth and prefill well under peak FLOPS; these are round, deliberately cautious numbers, labelled as
# priors wherever they are used, and replaced by fitted values as soon as a measured profile on a catalog GPU exists.
PRIOR_BANDWIDTH_EFFICIENCY = 0.6
PRIOR_COMPUTE_EFFICIENCY = 0.4
Z_95 = 1.6448536269514722

SLO_KEYS = ("ttft_p50_ms", "ttft_p95_ms", "tpot_p95_ms", "e2el_p50_ms", "e2el_p95_ms")
# Workload SLO key -> the `vllm bench serve` result key of the same percentile (research/benchmark.md §1.5).
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


@dataclass(frozen=True)
class RequestShape:
    input_tokens: int
    output_tokens: int
    images_per_request: int = 0
    image_tokens: int = 0  # language-model tokens per image
    vision_patches: int = 0  # vision-encoder tokens per image (before any merge)

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
    bandwidth: float = PRIOR_BANDWIDTH_EFFICIENCY
    compute: float = PRIOR_COMPUTE_EFFICIENCY
    source: str = "prior"  # "prior" or "fitted to N load points of M profiles"
    mape: float | None = None  # mean absolute percentage error of latencies against the measured points
    mape_prior: float | None = None
    points: int = 0


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

    def value(self, slo_key: str) -> float:
        return float(getattr(self, slo_key))


def prefill_seconds(cost: ModelCost, shape: RequestShape, share: DeviceShare, eff: Efficiency) -> float:
    n = shape.prompt_tokens
    flops = 2 * cost.lm_params * n + 2 * cost.attention_width * n * n  # QK^T and AV over a causal half-square
    flops += 2 * cost.vision_params * shape.images_per_request * shape.vision_patches
    return flops / (share.flops_per_s(cost.compute_dtype) * eff.compute)


def decode_step_seconds(
    cost: ModelCost, shape: RequestShape, share: DeviceShare, eff: Efficiency, batch: float
) -> float:
    memory = (cost.decode_weight_bytes + batch * shape.mean_context * cost.kv_bytes_per_token) / (
        share.bandwidth_gbs * 1e9 * eff.bandwidth
    )
    compute = 2 * cost.lm_params * batch / (share.flops_per_s(cost.compute_dtype) * eff.compute)
    return max(memory, compute)


def decode_batch(
    cost: ModelCost, shape: RequestShape, share: DeviceShare, eff: Efficiency, free: float, tokens_per_s: float
) -> float | None:
    """Mean decode batch b with b x free / t(b) = tokens_per_s, t(b) = max(a + k_m b, k_c b); None if no b can.

    Closed form: below the crossover b* = a / (k_c - k_m) the step is memory bound and the balance is linear in b;
    above it the rate is pinned at free / k_c, so a demand at or beyond that is unsustainable."""
    bw = share.bandwidth_gbs * 1e9 * eff.bandwidth
    a = cost.decode_weight_bytes / bw
    k_m = shape.mean_context * cost.kv_bytes_per_token / bw
    k_c = 2 * cost.lm_params / (share.flops_per_s(cost.compute_dtype) * eff.compute)
    if tokens_per_s <= 0:
        return 0.0
    if tokens_per_s * max(k_m, k_c) >= free:
        return None
    return tokens_per_s * a / (free - tokens_per_s * k_m)


def _wait_quantile(rho: float, mean_wait: float, q: float) -> float:
    if rho <= 0 or mean_wait <= 0 or rho <= 1 - q:
        return 0.0
    return (mean_wait / rho) * math.log(rho / (1 - q))


def predict(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    rate_rps: float,
    max_batch: float,
) -> Prediction | None:
    """Latency percentiles at Poisson arrival rate `rate_rps`; None when the replica cannot sustain that rate."""
    p = prefill_seconds(cost, shape, share, eff)
    rho = rate_rps * p
    if rho >= 1:
        return None
    free = 1 - rho
    tokens_per_s = rate_rps * shape.output_tokens

    batch = decode_batch(cost, shape, share, eff, free, tokens_per_s)
    if batch is None or batch > max_batch:
        return None
    step = decode_step_seconds(cost, shape, share, eff, batch)
    step95 = decode_step_seconds(cost, shape, share, eff, min(max_batch, batch + Z_95 * math.sqrt(batch)))
    mean_wait = rho * p / (2 * free)
    ttft50 = p + step + _wait_quantile(rho, mean_wait, 0.5)
    ttft95 = p + step + _wait_quantile(rho, mean_wait, 0.95)
    tpot50 = step / free
    tpot95 = step95 / free
    tail = max(shape.output_tokens - 1, 0)
    return Prediction(
        rate_rps=rate_rps,
        batch=batch,
        prefill_utilisation=rho,
        ttft_p50_ms=ttft50 * 1e3,
        ttft_p95_ms=ttft95 * 1e3,
        tpot_p50_ms=tpot50 * 1e3,
        tpot_p95_ms=tpot95 * 1e3,
        e2el_p50_ms=(ttft50 + tail * tpot50) * 1e3,
        e2el_p95_ms=(ttft95 + tail * tpot95) * 1e3,
    )


def meets(prediction: Prediction, slo: dict[str, float]) -> bool:
    return all(prediction.value(k) <= v for k, v in slo.items())


@dataclass(frozen=True)
class Capacity:
    """Highest request rate one replica sustains with every SLO key met, and where that figure came from."""

    capacity_rps: float
    meets_slo: bool
    provenance: Provenance
    at_capacity: Prediction | None = None
    at_zero_load: Prediction | None = None
    reason: str = ""
    binding_key: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def estimate_capacity(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    slo: dict[str, float],
    max_batch: float,
    provenance: Provenance,
) -> Capacity:
    if max_batch < 1:
        return Capacity(0.0, False, provenance, reason="not even one request fits the KV cache")
    idle = predict(cost, shape, share, eff, 1e-9, max_batch)
    assert idle is not None
    failing = [k for k, v in slo.items() if idle.value(k) > v]
    if failing:
        key = failing[0]
        return Capacity(
            0.0,
            False,
            provenance,
            at_zero_load=idle,
            binding_key=key,
            reason=f"{key} is {idle.value(key):.0f} ms at zero load > SLO {slo[key]:.0f} ms",
        )
    lo, hi = 0.0, 1.0 / prefill_seconds(cost, shape, share, eff)
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        pred = predict(cost, shape, share, eff, mid, max_batch)
        if pred is not None and meets(pred, slo):
            lo = mid
        else:
            hi = mid
    at_cap = predict(cost, shape, share, eff, lo, max_batch) if lo > 0 else idle
    binding = None
    over = predict(cost, shape, share, eff, hi * 1.0001, max_batch)
    if over is None:
        binding = "throughput"
    else:
        binding = next((k for k, v in slo.items() if over.value(k) > v), "throughput")
    return Capacity(lo, lo > 0, provenance, at_capacity=at_cap, at_zero_load=idle, binding_key=binding)


def measured_capacity(profile: BenchmarkProfile, slo: dict[str, float], source: str) -> Capacity:
    """Highest measured request throughput among load points that completed cleanly and met every SLO key."""
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
    return Capacity(best.request_throughput, True, prov, reason=f"load point {best.label}")


def load_point_value(point: LoadPoint, slo_key: str) -> float | None:
    key = SLO_TO_LOADPOINT[slo_key]
    value = getattr(point, key, None)
    if value is None and point.model_extra:
        value = point.model_extra.get(key)
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Observation:
    """One measured load point with the model inputs that describe it, for fitting the efficiency factors."""

    cost: ModelCost
    shape: RequestShape
    share: DeviceShare
    max_batch: float
    rate_rps: float
    ttft_p50_ms: float | None
    tpot_p50_ms: float | None


def observations_from_profile(
    profile: BenchmarkProfile, cost: ModelCost, shape: RequestShape, share: DeviceShare, max_batch: float
) -> list[Observation]:
    out = []
    for point in profile.points:
        if point.incomplete or point.failed or point.request_throughput <= 0:
            continue
        ttft = getattr(point, "median_ttft_ms", None) or (point.model_extra or {}).get("median_ttft_ms")
        tpot = getattr(point, "median_tpot_ms", None) or (point.model_extra or {}).get("median_tpot_ms")
        if ttft is None and tpot is None:
            continue
        out.append(Observation(cost, shape, share, max_batch, point.request_throughput, ttft, tpot))
    return out


def _residuals(obs: Sequence[Observation], eff: Efficiency) -> list[float]:
    res: list[float] = []
    for o in obs:
        pred = predict(o.cost, o.shape, o.share, eff, o.rate_rps, o.max_batch)
        for measured, attr in ((o.ttft_p50_ms, "ttft_p50_ms"), (o.tpot_p50_ms, "tpot_p50_ms")):
            if measured is None or measured <= 0:
                continue
            # An unsustainable prediction at a rate that was in fact measured is a large, finite miss.
            res.append(math.log(getattr(pred, attr) / measured) if pred is not None else 5.0)
    return res


def latency_mape(obs: Sequence[Observation], eff: Efficiency) -> float | None:
    errs = []
    for o in obs:
        pred = predict(o.cost, o.shape, o.share, eff, o.rate_rps, o.max_batch)
        for measured, attr in ((o.ttft_p50_ms, "ttft_p50_ms"), (o.tpot_p50_ms, "tpot_p50_ms")):
            if measured is None or measured <= 0:
                continue
            errs.append(abs(getattr(pred, attr) - measured) / measured if pred is not None else 1.0)
    return float(np.mean(errs)) if errs else None


def fit_efficiency(obs: Sequence[Observation], profiles: int = 1) -> Efficiency:
    """Least squares on log(predicted / measured) median TTFT and TPOT over all observations.

    With no observation the priors stay, labelled as such. The fitted factors' error (MAPE) is reported beside the
    prior's, so a reader sees how much calibration helped and how far off the model still is.
    """
    prior = Efficiency()
    if not obs:
        return prior
    mape_prior = latency_mape(obs, prior)

    def fun(x: np.ndarray) -> np.ndarray:
        return np.array(_residuals(obs, Efficiency(bandwidth=float(x[0]), compute=float(x[1]))))

    fit = least_squares(
        fun, x0=np.array([prior.bandwidth, prior.compute]), bounds=([1e-3, 1e-3], [2.0, 2.0]), x_scale="jac"
    )
    fitted = Efficiency(
        bandwidth=float(fit.x[0]),
        compute=float(fit.x[1]),
        source=f"fitted to {len(obs)} load points of {profiles} measured profile(s)",
        points=len(obs),
    )
    return replace(fitted, mape=latency_mape(obs, fitted), mape_prior=mape_prior)
