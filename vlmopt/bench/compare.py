"""Compare two benchmark profiles statistically: is variant B's TTFT, TPOT or throughput different from A's, beyond
what run-to-run noise explains?

For each load point both profiles measured (matched by label), and each metric:
- with per-request records (the profile's `<name>.requests.jsonl`): bootstrap the requests of each point
  independently and recompute the statistic (p50/p95 TTFT and TPOT, output throughput = output tokens / duration);
- without them: the points' own values, paired by point, resampled over points.
The effect is B's relative difference to A, averaged over the matched points; its confidence interval is the
bootstrap percentile interval at the chosen confidence. Verdict: "B higher" / "B lower" when the whole interval is
on one side of zero, else "no difference shown". docs/deploy-bundle.md#ab-of-variants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from vlmopt.schemas.common import ContractError, load_model
from vlmopt.schemas.profile import BenchmarkProfile, LoadPoint

MIN_REQUESTS = 20  # below this a point's percentiles are too coarse to bootstrap; the point values are used
Direction = Literal["lower_is_better", "higher_is_better"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    point_key: str  # LoadPoint field (vLLM bench serve result key)
    quantile: float | None  # per-request statistic; None = throughput
    direction: Direction


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("ttft_p50_ms", "median_ttft_ms", 0.50, "lower_is_better"),
    MetricSpec("ttft_p95_ms", "p95_ttft_ms", 0.95, "lower_is_better"),
    MetricSpec("tpot_p50_ms", "median_tpot_ms", 0.50, "lower_is_better"),
    MetricSpec("tpot_p95_ms", "p95_tpot_ms", 0.95, "lower_is_better"),
    MetricSpec("output_throughput", "output_throughput", None, "higher_is_better"),
)


@dataclass
class PointSamples:
    point: LoadPoint
    ttft_ms: np.ndarray | None = None
    tpot_ms: np.ndarray | None = None
    output_tokens: np.ndarray | None = None


@dataclass
class LoadedProfile:
    path: Path
    profile: BenchmarkProfile
    points: dict[str, PointSamples] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: float  # A's value averaged over matched points
    b: float
    relative_difference: float  # (B - A) / A, averaged over points
    ci_low: float
    ci_high: float
    method: str  # "per-request bootstrap" | "per-point bootstrap"
    points: int
    verdict: str
    better: str | None  # "A", "B" or None

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_profile(path: Path) -> LoadedProfile:
    profile = load_model(BenchmarkProfile, path)
    loaded = LoadedProfile(path, profile)
    records: dict[str, list[dict]] = {}
    if profile.requests_file:
        requests_path = path.parent / profile.requests_file
        if requests_path.is_file():
            for line in requests_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a crash
                records.setdefault(record.get("point", ""), []).append(record)
    for point in profile.points:
        if point.incomplete:
            continue
        samples = PointSamples(point)
        ok = [r for r in records.get(point.label, []) if r.get("success") and r.get("first_token_time") is not None]
        if len(ok) >= MIN_REQUESTS:
            samples.ttft_ms = np.array([(r["first_token_time"] - r["send_time"]) * 1000 for r in ok])
            tpot = [
                (r["end_time"] - r["first_token_time"]) * 1000 / (r["output_tokens"] - 1)
                for r in ok
                if r.get("end_time") is not None and (r.get("output_tokens") or 0) > 1
            ]
            samples.tpot_ms = np.array(tpot) if len(tpot) >= MIN_REQUESTS else None
            samples.output_tokens = np.array([r.get("output_tokens") or 0 for r in ok], dtype=float)
        loaded.points[point.label] = samples
    return loaded


def _per_request(samples: PointSamples, spec: MetricSpec) -> np.ndarray | None:
    if spec.quantile is None:
        return samples.output_tokens if samples.point.duration > 0 else None
    return samples.ttft_ms if spec.name.startswith("ttft") else samples.tpot_ms


def _statistic(values: np.ndarray, spec: MetricSpec, duration: float) -> np.ndarray:
    """Along the last axis: the quantile, or total output tokens / duration."""
    if spec.quantile is None:
        return values.sum(axis=-1) / duration
    return np.quantile(values, spec.quantile, axis=-1)


def _verdict(low: float, high: float, spec: MetricSpec, confidence: float) -> tuple[str, str | None]:
    if low > 0:
        better = "A" if spec.direction == "lower_is_better" else "B"
        return f"B higher ({confidence:.0%} CI above 0)", better
    if high < 0:
        better = "B" if spec.direction == "lower_is_better" else "A"
        return f"B lower ({confidence:.0%} CI below 0)", better
    return "no difference shown", None


def compare_metric(
    a: LoadedProfile, b: LoadedProfile, labels: list[str], spec: MetricSpec, confidence: float,
    resamples: int, rng: np.random.Generator,
) -> MetricComparison | None:
    pairs = [(a.points[x], b.points[x]) for x in labels]
    per_request = all(_per_request(pa, spec) is not None and _per_request(pb, spec) is not None for pa, pb in pairs)
    alpha = (1 - confidence) / 2
    if per_request:
        rel = np.zeros(resamples)
        a_vals, b_vals = [], []
        for pa, pb in pairs:
            xa, xb = _per_request(pa, spec), _per_request(pb, spec)
            assert xa is not None and xb is not None
            boot_a = _statistic(xa[rng.integers(0, len(xa), (resamples, len(xa)))], spec, pa.point.duration)
            boot_b = _statistic(xb[rng.integers(0, len(xb), (resamples, len(xb)))], spec, pb.point.duration)
            rel += (boot_b - boot_a) / boot_a
            a_vals.append(float(_statistic(xa, spec, pa.point.duration)))
            b_vals.append(float(_statistic(xb, spec, pb.point.duration)))
        rel /= len(pairs)
        method = "per-request bootstrap"
    else:
        values = [
            (getattr(pa.point, spec.point_key, None), getattr(pb.point, spec.point_key, None)) for pa, pb in pairs
        ]
        values = [(x, y) for x, y in values if x is not None and y is not None and x > 0]
        if not values:
            return None
        a_vals = [float(x) for x, _ in values]
        b_vals = [float(y) for _, y in values]
        diffs = np.array([(y - x) / x for x, y in values])
        rel = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
        method = "per-point bootstrap"
        if len(values) == 1:
            method += " (one point: no spread, interval is the point)"
    point_estimate = float(np.mean([(y - x) / x for x, y in zip(a_vals, b_vals, strict=True)]))
    low, high = (float(v) for v in np.quantile(rel, [alpha, 1 - alpha]))
    verdict, better = _verdict(low, high, spec, confidence)
    return MetricComparison(spec.name, float(np.mean(a_vals)), float(np.mean(b_vals)), point_estimate, low, high,
                            method, len(a_vals), verdict, better)


def compare_profiles(
    path_a: Path, path_b: Path, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[list[str], list[MetricComparison]]:
    """(matched point labels, one comparison per metric that both profiles measured)."""
    if not 0.5 <= confidence < 1:
        raise ContractError(f"--confidence: must be in [0.5, 1), got {confidence}")
    a, b = load_profile(Path(path_a)), load_profile(Path(path_b))
    labels = [label for label in a.points if label in b.points]
    if not labels:
        raise ContractError(
            f"{path_a} and {path_b} share no complete load point (labels {sorted(a.points)} vs {sorted(b.points)})"
        )
    rng = np.random.default_rng(seed)
    results = [compare_metric(a, b, labels, spec, confidence, resamples, rng) for spec in METRICS]
    return labels, [r for r in results if r is not None]
