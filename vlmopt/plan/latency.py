"""The open-loop latency model (Poisson arrivals at a rate): latency percentiles per replica, on numpy arrays so
that a plan's thousands of options are evaluated at once (docs/cost-model.md#the-performance-model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .costs import NO_HOST, DeviceShare, Efficiency, HostCosts, ModelCost, RequestShape, prefill_seconds

Z_95 = 1.6448536269514722

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



@dataclass(frozen=True)
class Coefficients:
    """Per replica, the few numbers the latency model needs (arrays, one entry per replica option)."""

    prefill_s: np.ndarray  # G: prefill + vision + admission seconds per request
    step_base_s: np.ndarray  # a: step overhead + one decode step's weight reads
    step_per_seq_memory_s: np.ndarray  # k_m: per-sequence overhead + KV reads per sequence in the batch
    step_per_seq_compute_s: np.ndarray  # k_c: matmul time per sequence in the batch
    step_overhead_s: np.ndarray  # the engine overhead part of a and k_c's regime: step_s, step_seq_s
    step_seq_overhead_s: np.ndarray
    output_tokens: np.ndarray
    max_batch: np.ndarray
    host_pre_s: np.ndarray  # API-server wall seconds before the engine
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
    ) -> Coefficients:
        rows = []
        for i, (cost, shape, share, max_batch) in enumerate(items):
            host = hosts[i] if hosts is not None else NO_HOST
            budget = budgets[i] if budgets is not None else None
            bw = share.bandwidth_gbs * 1e9 * eff.bandwidth
            flops = share.flops_per_s(cost.compute_dtype) * eff.compute
            step, per_seq = eff.step_overhead(cost.layers), eff.seq_overhead(cost.layers)
            rows.append((
                prefill_seconds(cost, shape, share, eff) + host.engine_preprocess_s(shape),
                step + cost.decode_weight_bytes / bw,
                per_seq + shape.mean_context * cost.kv_bytes_per_token / bw,
                per_seq + 2 * cost.lm_params / flops,
                step,
                per_seq,
                float(shape.output_tokens),
                float(max_batch),
                host.pre_engine_wall_s(shape),
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


def _step_time(c: Coefficients, batch: np.ndarray) -> np.ndarray:
    return np.maximum(c.step_base_s + c.step_per_seq_memory_s * batch,
                      c.step_overhead_s + c.step_per_seq_compute_s * batch)


def predict_many(c: Coefficients, rate: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The open-loop model of docs/cost-model.md#the-performance-model for many replicas at once: (sustainable
    mask, latencies in ms and means in s) at Poisson arrival rate `rate`."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
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
        host_wait = np.where(host_util > 0, c.host_pre_s * host_util / (1 - host_util), 0.0)
        ok = (rho < 1) & feasible & (batch <= c.max_batch) & host_ok
        # What one request sees: while it prefills, the others decoding (b); while it decodes, itself and them (a
        # Poisson count seen from inside is one more than its mean).
        seen = np.minimum(c.max_batch, batch + 1)
        step = _step_time(c, batch)  # t_dec: the decode part of every step
        busy = 1 - np.exp(-batch)  # something else is in the engine when the request arrives
        # vLLM V1 admits every waiting request at the next step, within the token budget: the step a request arrives
        # in (length-biased: steps are t_dec + G x the prefills they carry, Poisson in number, mean t_dec / (1 - rho),
        # so E[T^2]/E[T] = mean + rho G) runs to its end, then the request is prefilled with all that arrived during
        # it. Its first token comes at the end of the step that finishes its prompt.
        # Step lengths feed back (a long step gathers more prefills for the next): Var(T) = G^2 X E[T] / (1 - rho^2).
        step_var = c.prefill_s**2 * rate * (step / free) / (1 - rho**2)
        biased = step / free + step_var / (step / free)
        arrivals = busy * rate * biased  # other prefills admitted with it
        arrivals_sd = np.sqrt(arrivals + busy * rate**2 * step_var)
        left = np.maximum(c.chunk_budget - batch, 1.0)

        def first_token(arrived: np.ndarray, ahead: float, residual: float) -> np.ndarray:
            """Engine seconds from arrival to the first token with `arrived` others admitted alongside and the share
            `ahead` of them in front (FIFO), `residual` of the step in flight left."""
            through = (arrived * ahead + 1) * c.prompt_tokens
            steps = np.where(np.isfinite(c.chunk_budget), np.maximum(np.ceil(through / left - 1e-9), 1), 1)
            prefills = np.minimum(arrived + 1, np.where(np.isfinite(left), steps * left / c.prompt_tokens, np.inf))
            return busy * biased * residual + steps * step + c.prefill_s * prefills

        host = c.host_pre_s + c.host_token_s
        arrivals95 = arrivals + Z_95 * arrivals_sd
        ttft50 = host + _wait_quantiles(host_util, host_wait, 0.5) + first_token(arrivals, 0.5, 0.5)
        ttft95 = host + _wait_quantiles(host_util, host_wait, 0.95) + first_token(arrivals95, 0.95, 0.95)
        ttft_mean = host + host_wait + first_token(arrivals, 0.5, 0.5)
        # TPOT: each of its decode steps takes t_dec at the batch it sees, stretched by the others' prefills (share
        # rho on average). The p95: a batch 1.645 sqrt(b) above the mean for the request's whole life, and the
        # others' prefills during it, Poisson in number (X x its decode time), 1.645 standard deviations above.
        mean_step = _step_time(c, seen) / free
        batch95 = np.minimum(c.max_batch, seen + Z_95 * np.sqrt(batch))
        spread_batch = (_step_time(c, batch95) - _step_time(c, seen)) / free
        # (their count stretches the decode time that gathers them: 1 / (1 - rho))
        spread_prefill = Z_95 * c.prefill_s * np.sqrt(rate * mean_step / np.maximum(decode_steps, 1)) / free
        tpot50 = mean_step
        tpot95 = mean_step + np.sqrt(spread_batch**2 + spread_prefill**2)
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


def prediction_at(values: dict[str, np.ndarray], i: int) -> Prediction:
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
    coef = Coefficients.of([(cost, shape, share, max_batch)], eff, [host], [max_num_batched_tokens])
    ok, values = predict_many(coef, np.array([rate_rps]))
    return prediction_at(values, 0) if ok[0] else None


def sustainable_rate(c: Coefficients) -> np.ndarray:
    """An upper bound of the sustainable rate per option: prefill, API servers, and the decode ceiling."""
    with np.errstate(divide="ignore"):
        prefill = 1 / c.prefill_s
        host = np.where(c.host_total_s > 0, c.api_servers / c.host_total_s, np.inf)
        steps = np.maximum(c.output_tokens - 1, 1)
        decode = 1 / (steps * np.maximum(c.step_per_seq_memory_s, c.step_per_seq_compute_s) + c.prefill_s)
    return np.minimum(np.minimum(prefill, host), decode)



def meets(prediction: Prediction, slo: dict[str, float]) -> bool:
    return all(prediction.value(k) <= v for k, v in slo.items())

