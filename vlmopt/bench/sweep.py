"""Saturation detection and the SLO capacity search (pure functions; the runner measures).

Search over concurrency, the load variable of `vllm bench sweep serve_workload` (upstream `vllm/benchmarks/sweep/`):
double it from 1 until the server saturates, the SLO breaks or a cap is hit, then bisect between the highest
concurrency that met the SLO and the lowest that did not. Saturation follows GuideLLM's sweep profile (from
synchronous up to maximum throughput) on a coarse grid: more load buys (almost) no more throughput while latency
climbs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vlmopt.schemas.profile import CapacitySummary, LoadPoint

MIN_THROUGHPUT_GAIN = 0.10  # <10% more req/s after doubling the load ...
LATENCY_GROWTH = 1.5  # ... while median E2EL grew by 50% or more: saturated


@dataclass(frozen=True)
class Observation:
    """The few numbers of a measured point the search needs."""

    concurrency: int
    request_throughput: float
    median_e2el_ms: float | None
    meets_slo: bool | None
    failed: int = 0

    @classmethod
    def of(cls, point: LoadPoint) -> Observation:
        return cls(
            concurrency=point.max_concurrency or 0,
            request_throughput=point.request_throughput,
            median_e2el_ms=getattr(point, "median_e2el_ms", None),
            meets_slo=point.meets_slo,
            failed=point.failed,
        )


def is_saturated(lower: Observation, higher: Observation) -> bool:
    """True when going from `lower` to `higher` load gained < MIN_THROUGHPUT_GAIN throughput while median E2EL
    grew >= LATENCY_GROWTH-fold, or when the higher load started failing requests."""
    if higher.failed > 0 and lower.failed == 0:
        return True
    if lower.request_throughput <= 0:
        return False
    gain = higher.request_throughput / lower.request_throughput - 1.0
    if lower.median_e2el_ms and higher.median_e2el_ms:
        growth = higher.median_e2el_ms / lower.median_e2el_ms
    else:
        growth = float("inf")
    return gain < MIN_THROUGHPUT_GAIN and growth >= LATENCY_GROWTH


def saturation_index(observations: Sequence[Observation]) -> int | None:
    """Index (in load order) of the first point that is saturated relative to the one before it."""
    ordered = sorted(observations, key=lambda o: o.concurrency)
    for i in range(1, len(ordered)):
        if is_saturated(ordered[i - 1], ordered[i]):
            return i
    return None


def next_concurrency(
    measured: Mapping[int, Observation], has_slo: bool, max_concurrency: int, start: int = 1
) -> int | None:
    """The next concurrency to measure, or None when the search is over. Pure: call after every point."""
    if not measured:
        return start
    ordered = sorted(measured.values(), key=lambda o: o.concurrency)
    sat = saturation_index(ordered)
    breaks_slo = [o.concurrency for o in ordered if has_slo and o.meets_slo is False]
    top = ordered[-1].concurrency
    doubling_done = sat is not None or bool(breaks_slo) or top >= max_concurrency
    if not doubling_done:
        return min(top * 2, max_concurrency)
    if not has_slo:
        return None
    good = [o.concurrency for o in ordered if o.meets_slo]
    low = max(good) if good else 0
    bad_above = [c for c in breaks_slo if c > low]
    if not bad_above:
        return None  # every measured load met the SLO up to saturation or the cap
    high = min(bad_above)
    if high - low <= 1:
        return None
    mid = (low + high) // 2
    return mid if mid not in measured and mid >= 1 else None


def capacity_summary(points: Sequence[LoadPoint], slo: Mapping[str, float], method: str) -> CapacitySummary:
    """Highest measured load meeting the SLO, and the saturation throughput, from the points in hand."""
    complete = [p for p in points if not p.incomplete and p.completed > 0]
    summary = CapacitySummary(slo=dict(slo), method=method)
    meeting = [p for p in complete if p.meets_slo]
    if slo and meeting:
        best = max(meeting, key=lambda p: p.request_throughput)
        summary.max_rate_meeting_slo = best.request_throughput
        summary.max_concurrency_meeting_slo = best.max_concurrency
    closed_loop = [p for p in complete if p.arrival == "concurrency" and p.max_concurrency]
    if closed_loop:
        observations = sorted((Observation.of(p) for p in closed_loop), key=lambda o: o.concurrency)
        sat = saturation_index(observations)
        upto = observations if sat is None else observations[: sat + 1]
        summary.saturation_rate = max(o.request_throughput for o in upto)
        summary.saturation_concurrency = None if sat is None else observations[sat].concurrency
        summary.saturation_reached = sat is not None
    return summary
