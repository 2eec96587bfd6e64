"""Error bands on capacities: how far the true capacity may be from the figure the planner uses.

- measured: the run-to-run spread of the load point the capacity came from. A closed-loop point's throughput is
  N / mean E2EL (Little's law), so its relative standard error is that of the mean E2EL, std / (mean sqrt(n)) over
  the n completed requests (the per-request bootstrap in closed form); where the same load was measured more than
  once (repeated points or profiles), the spread of the repeats, whichever is wider. Band = +-1.96 standard errors.
- estimated: the performance model's own measured error for that kind of estimate, from the validations in
  docs/cost-model.md#validation (held-out CPU profiles for a calibrated estimate, published measurements for an
  uncalibrated one). The true capacity is the estimate / (predicted / measured), so with r10 and r90 the 10th and
  90th percentiles of predicted / measured capacity there: low = capacity / r90, high = capacity / r10 (an 80 %
  band, asymmetric where the model errs more one way). The figures ship in vlmopt/data/perf_validation.yaml,
  written by the validation scripts, with their date.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import Field

from vlmopt.paths import data_file
from vlmopt.schemas.common import StrictModel
from vlmopt.schemas.profile import BenchmarkProfile, LoadPoint

Z_95 = 1.959963984540054
# The bands' figures, in the data folder (a user's --data-dir / $VLMOPT_DATA_DIR copy wins over the bundled one).
VALIDATION_DATA = "perf_validation.yaml"


class ErrorFigure(StrictModel):
    """One kind of estimate's measured capacity error."""

    kind: str = Field(description="calibrated | prior")
    ratio_p10: float = Field(gt=0, description="10th percentile of predicted / measured capacity")
    ratio_p90: float = Field(gt=0, description="90th percentile of predicted / measured capacity")
    capacity_mape: float = Field(ge=0)
    median_latency_mape: float | None = Field(default=None, ge=0)
    cases: int = Field(ge=1, description="how many held-out capacities the figure rests on")
    how: str = Field(description="which validation, on what")
    date: str


class ValidationErrors(StrictModel):
    """vlmopt/data/perf_validation.yaml: the errors the bands use (written by scripts/validate_perf_model.py and
    scripts/validate_published.py)."""

    schema_version: int = 1
    figures: list[ErrorFigure] = Field(default_factory=list)

    def get(self, kind: str) -> ErrorFigure | None:
        return next((f for f in self.figures if f.kind == kind), None)


def load_validation_errors(path: Path | None = None) -> ValidationErrors:
    """The validation figures from `path`, else from the data folder (vlmopt.paths.data_file)."""
    return _load_validation_errors(path or data_file(VALIDATION_DATA))


@lru_cache(maxsize=4)
def _load_validation_errors(path: Path) -> ValidationErrors:
    if not path.is_file():
        return ValidationErrors()
    return ValidationErrors.model_validate(yaml.safe_load(path.read_text()) or {})


def estimated_band(capacity_rps: float, kind: str, errors: ValidationErrors) -> tuple[float | None, float | None, str]:
    """(low, high, how) for an estimated capacity of `kind` ('calibrated': fitted to measured profiles of the
    same device kind; 'prior': uncalibrated); (None, None, why) when no validation measured that kind."""
    figure = errors.get(kind)
    if figure is None:
        return None, None, f"no validation measured the error of {kind} estimates"
    low, high = capacity_rps / figure.ratio_p90, capacity_rps / figure.ratio_p10
    how = (f"x{1 / figure.ratio_p90:.2f} to x{1 / figure.ratio_p10:.2f}: 80 % of {kind} estimates were within it "
           f"over {figure.cases} held-out cases ({figure.how}, {figure.date})")
    return min(low, high), max(low, high), how


def ratio_quantiles(predicted_over_measured: Sequence[float]) -> tuple[float, float]:
    """(10th, 90th) percentile of predicted / measured, for an ErrorFigure."""
    import numpy as np

    values = np.array([v for v in predicted_over_measured if v > 0], dtype=float)
    return float(np.percentile(values, 10)), float(np.percentile(values, 90))


def _point_relative_se(point: LoadPoint) -> float | None:
    extra = point.model_extra or {}
    mean, std = extra.get("mean_e2el_ms"), extra.get("std_e2el_ms")
    if mean is None or std is None or mean <= 0 or point.completed < 2:
        return None
    return float(std) / float(mean) / math.sqrt(point.completed)


def relative_spread(values: Sequence[float]) -> float | None:
    """Standard error of the mean of repeated measurements, relative to their mean."""
    vals = [float(v) for v in values if v and v > 0]
    if len(vals) < 2:
        return None
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return math.sqrt(var / len(vals)) / mean


def measured_band(profile: BenchmarkProfile, point: LoadPoint,
                  repeats: Sequence[float] = ()) -> tuple[float | None, float | None, str]:
    """(low, high, how) for a measured capacity taken from `point`; `repeats` are other measurements of the same
    load (same variant, device and concurrency or rate) in request/s."""
    same = [p.request_throughput for p in profile.points
            if p is not point and p.label == point.label and not p.incomplete and not p.failed]
    candidates: list[tuple[float, str]] = []
    se = _point_relative_se(point)
    if se is not None:
        candidates.append((se, f"per-request spread of E2EL over {point.completed} requests"))
    spread = relative_spread([point.request_throughput, *same, *repeats])
    if spread is not None:
        candidates.append((spread, f"{1 + len(same) + len(repeats)} repeated measurements"))
    if not candidates:
        return None, None, "no spread recorded for this point"
    se, how = max(candidates)
    x = point.request_throughput
    return x * max(1 - Z_95 * se, 0.0), x * (1 + Z_95 * se), f"+-{Z_95 * se:.1%} (95%, {how})"


__all__ = [
    "VALIDATION_DATA",
    "ErrorFigure",
    "ValidationErrors",
    "estimated_band",
    "load_validation_errors",
    "measured_band",
    "ratio_quantiles",
    "relative_spread",
]
