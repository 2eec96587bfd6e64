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


@dataclass(frozen=True)
class _Coefficients:
    """Per replica, the few numbers the latency model needs (arrays, one entry per replica option)."""

    prefill_s: np.ndarray  # P: prefill + vision seconds per request
    step_base_s: np.ndarray  # a: one decode step's weight reads
    step_per_seq_memory_s: np.ndarray  # k_m: KV reads per sequence in the batch
    step_per_seq_compute_s: np.ndarray  # k_c: matmul time per sequence in the batch
    output_tokens: np.ndarray
    max_batch: np.ndarray

    @classmethod
    def of(cls, items: Sequence[tuple[ModelCost, RequestShape, DeviceShare, float]], eff: Efficiency) -> _Coefficients:
        rows = []
        for cost, shape, share, max_batch in items:
            bw = share.bandwidth_gbs * 1e9 * eff.bandwidth
            flops = share.flops_per_s(cost.compute_dtype) * eff.compute
            rows.append((
                prefill_seconds(cost, shape, share, eff),
                cost.decode_weight_bytes / bw,
                shape.mean_context * cost.kv_bytes_per_token / bw,
                2 * cost.lm_params / flops,
                float(shape.output_tokens),
                float(max_batch),
            ))
        cols = np.array(rows, dtype=float).reshape(len(rows), 6).T
        return cls(*cols)


def _wait_quantiles(rho: np.ndarray, mean_wait: np.ndarray, q: float) -> np.ndarray:
    """Exponential tail of the M/D/1 wait: P(W > t) ~ rho exp(-t rho / mean wait), 0 below the atom at zero."""
    positive = (rho > 1 - q) & (mean_wait > 0) & (rho > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(positive, (mean_wait / rho) * np.log(rho / (1 - q)), 0.0)


def _predict_many(c: _Coefficients, rate: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The queueing model of the module docstring for many replicas at once: (sustainable mask, latencies ms)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rho = rate * c.prefill_s
        free = 1 - rho
        tokens_per_s = rate * c.output_tokens
        # Mean decode batch b with b x free / t(b) = tokens/s, t(b) = max(a + k_m b, k_c b): closed form below the
        # compute-bound crossover; at or beyond free / max(k_m, k_c) tokens/s no batch can keep up.
        batch = np.where(
            tokens_per_s > 0, tokens_per_s * c.step_base_s / (free - tokens_per_s * c.step_per_seq_memory_s), 0.0
        )
        feasible = (tokens_per_s * np.maximum(c.step_per_seq_memory_s, c.step_per_seq_compute_s) < free) | (
            tokens_per_s <= 0)
        ok = (rho < 1) & feasible & (batch <= c.max_batch)
        step = np.maximum(c.step_base_s + c.step_per_seq_memory_s * batch, c.step_per_seq_compute_s * batch)
        batch95 = np.minimum(c.max_batch, batch + Z_95 * np.sqrt(np.maximum(batch, 0.0)))
        step95 = np.maximum(c.step_base_s + c.step_per_seq_memory_s * batch95, c.step_per_seq_compute_s * batch95)
        mean_wait = rho * c.prefill_s / (2 * free)
        ttft50 = c.prefill_s + step + _wait_quantiles(rho, mean_wait, 0.5)
        ttft95 = c.prefill_s + step + _wait_quantiles(rho, mean_wait, 0.95)
        tpot50 = step / free
        tpot95 = step95 / free
        tail = np.maximum(c.output_tokens - 1, 0)
        out = {
            "rate_rps": np.broadcast_to(rate, rho.shape).astype(float),
            "batch": batch,
            "prefill_utilisation": rho,
            "ttft_p50_ms": ttft50 * 1e3,
            "ttft_p95_ms": ttft95 * 1e3,
            "tpot_p50_ms": tpot50 * 1e3,
            "tpot_p95_ms": tpot95 * 1e3,
            "e2el_p50_ms": (ttft50 + tail * tpot50) * 1e3,
            "e2el_p95_ms": (ttft95 + tail * tpot95) * 1e3,
        }
    return ok, out


def _prediction_at(values: dict[str, np.ndarray], i: int) -> Prediction:
    return Prediction(**{k: float(v[i]) for k, v in values.items()})


def predict(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    rate_rps: float,
    max_batch: float,
) -> Prediction | None:
    """Latency percentiles at Poisson arrival rate `rate_rps`; None when the replica cannot sustain that rate."""
    ok, values = _predict_many(_Coefficients.of([(cost, shape, share, max_batch)], eff), np.array([rate_rps]))
    return _prediction_at(values, 0) if ok[0] else None


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


@dataclass(frozen=True)
class CapacityQuery:
    """One replica option whose capacity at the SLO `estimate_capacities` finds."""

    cost: ModelCost
    shape: RequestShape
    share: DeviceShare
    slo: dict[str, float]
    max_batch: float
    provenance: Provenance


_BISECTION_TOLERANCE = 1e-4  # relative width of the final rate bracket


def estimate_capacities(queries: Sequence[CapacityQuery], eff: Efficiency) -> list[Capacity]:
    """Capacity at the SLO of many replica options at once: the bisection on the rate runs on arrays (numpy), every
    option with its own bracket, so that planning a large workload evaluates thousands of options in milliseconds."""
    out: list[Capacity | None] = [None] * len(queries)
    todo = []
    for i, q in enumerate(queries):
        if q.max_batch < 1:
            out[i] = Capacity(0.0, False, q.provenance, reason="not even one request fits the KV cache")
        else:
            todo.append(i)
    if todo:
        chosen = [queries[i] for i in todo]
        coef = _Coefficients.of([(q.cost, q.shape, q.share, q.max_batch) for q in chosen], eff)
        limit = np.array([[q.slo.get(k, np.inf) for k in SLO_KEYS] for q in chosen], dtype=float).reshape(-1, 5)

        def meeting(ok: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
            met = ok.copy()
            for j, key in enumerate(SLO_KEYS):
                met &= values[key] <= limit[:, j]
            return met

        idle_ok, idle = _predict_many(coef, np.full(len(chosen), 1e-9))
        assert idle_ok.all()
        searching = meeting(idle_ok, idle)
        lo = np.zeros(len(chosen))
        hi = 1.0 / coef.prefill_s
        active = searching & (hi - lo > _BISECTION_TOLERANCE * hi)
        while active.any():
            mid = (lo + hi) / 2
            met = meeting(*_predict_many(coef, mid))
            lo = np.where(active & met, mid, lo)
            hi = np.where(active & ~met, mid, hi)
            active &= hi - lo > _BISECTION_TOLERANCE * hi
        at_ok, at = _predict_many(coef, np.where(lo > 0, lo, 1e-9))
        over_ok, over = _predict_many(coef, hi * 1.0001)
        for j, i in enumerate(todo):
            q = chosen[j]
            idle_pred = _prediction_at(idle, j)
            if not searching[j]:
                key = next(k for k, v in q.slo.items() if idle_pred.value(k) > v)
                reason = f"{key} is {idle_pred.value(key):.0f} ms at zero load > SLO {q.slo[key]:.0f} ms"
                out[i] = Capacity(0.0, False, q.provenance, at_zero_load=idle_pred, binding_key=key, reason=reason)
                continue
            binding = "throughput"
            if over_ok[j]:
                binding = next((k for k, v in q.slo.items() if float(over[k][j]) > v), "throughput")
            capacity = float(lo[j])
            at_cap = _prediction_at(at, j) if capacity > 0 and at_ok[j] else idle_pred
            out[i] = Capacity(capacity, capacity > 0, q.provenance, at_capacity=at_cap, at_zero_load=idle_pred,
                              binding_key=binding)
    return out  # type: ignore[return-value]


def estimate_capacity(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    slo: dict[str, float],
    max_batch: float,
    provenance: Provenance,
) -> Capacity:
    return estimate_capacities([CapacityQuery(cost, shape, share, slo, max_batch, provenance)], eff)[0]


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
