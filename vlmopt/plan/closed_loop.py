"""Closed loop: N clients sending back to back (a benchmark's max_concurrency)."""

from __future__ import annotations

import numpy as np

from .costs import NO_HOST, DeviceShare, Efficiency, HostCosts, ModelCost, RequestShape
from .latency import Coefficients, Prediction, predict_many, prediction_at, sustainable_rate


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
    coef = Coefficients.of([(cost, shape, share, max_batch)], eff, [host], [max_num_batched_tokens])
    return _closed_loop(coef, np.array([float(concurrency)]))[0]


def _closed_loop(coef: Coefficients, concurrency: np.ndarray) -> list[Prediction]:
    n = concurrency
    running = np.minimum(n, coef.max_batch)
    hi = sustainable_rate(coef) * (1 - 1e-9)
    lo = np.zeros_like(hi)
    for _ in range(80):
        mid = (lo + hi) / 2
        ok, values = predict_many(coef, mid, running)
        # Little's law over the clients in the engine; an unsustainable rate is above the answer.
        above = ~ok | (mid * values["_e2el_mean_s"] > running)
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    rate = np.maximum(lo, 1e-12)
    _, values = predict_many(coef, rate, running)
    # Clients beyond max_batch queue for a slot: each waits (N - running) / X before its request is admitted.
    queued = np.where(n > running, (n - running) / rate, 0.0) * 1e3
    for key in ("ttft_p50_ms", "ttft_p95_ms", "e2el_p50_ms", "e2el_p95_ms"):
        values[key] = values[key] + queued
    return [prediction_at(values, i) for i in range(len(n))]

