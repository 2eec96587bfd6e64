"""Calibration: measured load points as observations, and the engine's efficiencies and overheads fitted to them
(docs/cost-model.md#the-performance-model, "Calibration")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy.optimize import least_squares

from vlmopt.schemas.profile import BenchmarkProfile

from .capacity import load_point_value
from .closed_loop import closed_loop_predictions, predict_closed_loop
from .costs import NO_HOST, DeviceShare, Efficiency, HostCosts, ModelCost, RequestShape
from .latency import Coefficients, Prediction, predict


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
    requests: int | None = None  # requests the point measured (a closed-loop point is simulated with as many)


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
                               load_point_value(point, "p95_tpot_ms"), point.label, point.completed or None))
    return out


def predict_observation(o: Observation, eff: Efficiency) -> Prediction | None:
    """The model's prediction for an observation's load: closed loop at its concurrency, else open at its rate."""
    if o.concurrency:
        return predict_closed_loop(o.cost, o.shape, o.share, eff, o.concurrency, o.max_batch, o.host,
                                   o.max_num_batched_tokens, o.requests)
    return predict(o.cost, o.shape, o.share, eff, o.rate_rps, o.max_batch, o.host, o.max_num_batched_tokens)


def _predict_observations(obs: Sequence[Observation], eff: Efficiency) -> list[Prediction | None]:
    """Predictions for many observations, vectorised where they share nothing but the calibration."""
    out: list[Prediction | None] = [None] * len(obs)
    closed = [i for i, o in enumerate(obs) if o.concurrency]
    if closed:
        coef = Coefficients.of([(obs[i].cost, obs[i].shape, obs[i].share, obs[i].max_batch) for i in closed], eff,
                                [obs[i].host for i in closed], [obs[i].max_num_batched_tokens for i in closed])
        counts = np.array([float(obs[i].requests or 0) for i in closed])
        predictions = closed_loop_predictions(coef, np.array([float(obs[i].concurrency) for i in closed]), counts)
        for i, p in zip(closed, predictions, strict=True):
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
_FREE = ("bandwidth", "compute", "step_s", "step_seq_s", "request_s", "step_layer_s", "step_seq_layer_s")
_BOUNDS = {"bandwidth": (1e-4, 1.0), "compute": (1e-4, 1.0), "step_s": (1e-6, 1.0), "step_seq_s": (1e-8, 0.1),
           "request_s": (1e-6, 2.0), "step_layer_s": (1e-10, 0.1), "step_seq_layer_s": (1e-12, 0.01)}
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

    # Tolerances far below the measurements' own noise (a few %), so the fit stops once it no longer moves.
    fit = least_squares(fun, x0=x0, bounds=(lower, upper), x_scale=1.0, ftol=1e-4, xtol=1e-4)
    fitted = replace(calibration(fit.x), source=f"fitted to {len(obs)} load points of {profiles} measured profile(s)",
                     points=len(obs))
    return replace(fitted, mape=latency_mape(obs, fitted), mape_prior=mape_prior)


def calibration_fields() -> tuple[str, ...]:
    """Names of Efficiency's fitted parameters (for reports)."""
    return tuple(f.name for f in fields(Efficiency) if f.name in _FREE)
