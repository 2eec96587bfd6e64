"""Capacity at the SLO of a replica: estimated by bisection on the open-loop model, or measured from a profile's
load points, each with where the figure came from (docs/cost-model.md#where-a-capacity-comes-from-in-order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from vlmopt.schemas.common import Provenance
from vlmopt.schemas.profile import BenchmarkProfile, LoadPoint

from .costs import NO_HOST, DeviceShare, Efficiency, HostCosts, ModelCost, RequestShape
from .latency import Coefficients, Prediction, predict_many, prediction_at, sustainable_rate

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


def _bisect(coef: Coefficients, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(searching, lo, hi, idle values): per option the highest rate meeting every SLO limit, by bisection."""

    def meeting(ok: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
        met = ok.copy()
        for j, key in enumerate(SLO_KEYS):
            met &= values[key] <= limit[:, j]
        return met

    idle_ok, idle = predict_many(coef, np.full(limit.shape[0], 1e-9))
    searching = meeting(idle_ok, idle)
    lo = np.zeros(limit.shape[0])
    hi = sustainable_rate(coef)
    active = searching & (hi - lo > _BISECTION_TOLERANCE * hi)
    while active.any():
        mid = (lo + hi) / 2
        met = meeting(*predict_many(coef, mid))
        lo = np.where(active & met, mid, lo)
        hi = np.where(active & ~met, mid, hi)
        active &= hi - lo > _BISECTION_TOLERANCE * hi
    return searching, lo, hi, idle


def _without_host(coef: Coefficients) -> Coefficients:
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
        coef = Coefficients.of([(q.cost, q.shape, q.share, q.max_batch) for q in chosen], eff,
                                [q.host for q in chosen], [q.max_num_batched_tokens for q in chosen])
        limit = np.array([[q.slo.get(k, np.inf) for k in SLO_KEYS] for q in chosen], dtype=float).reshape(-1, 5)
        searching, lo, hi, idle = _bisect(coef, limit)
        at_ok, at = predict_many(coef, np.where(lo > 0, lo, 1e-9))
        over_ok, over = predict_many(coef, hi * 1.0001)
        busy_host = searching & (at["host_utilisation"] >= 0.05)
        host_bound = np.zeros(len(chosen), dtype=bool)
        if busy_host.any():
            _, free_lo, _, _ = _bisect(_without_host(coef), limit)
            host_bound = busy_host & (free_lo > lo * (1 + HOST_BINDING_MARGIN))
        for j, i in enumerate(todo):
            q = chosen[j]
            idle_pred = prediction_at(idle, j)
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
            at_cap = prediction_at(at, j) if capacity > 0 and at_ok[j] else idle_pred
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

