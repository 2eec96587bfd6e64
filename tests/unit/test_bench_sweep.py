"""Saturation detection and the doubling-then-bisection search, driven by a simulated server."""

from __future__ import annotations

from vlmopt.bench.sweep import Observation, capacity_summary, is_saturated, next_concurrency, saturation_index
from vlmopt.schemas.profile import LoadPoint


def simulated(concurrency: int, capacity: float = 8.0, slo_e2el_ms: float | None = 900.0) -> Observation:
    """A server that serves up to 8 req/s: throughput = min(c, 8) * 1 req/s, latency grows past the knee."""
    throughput = min(concurrency, capacity)
    e2el = 1000.0 * concurrency / throughput * 0.5  # Little's law with 0.5 s service time
    meets = None if slo_e2el_ms is None else e2el <= slo_e2el_ms
    return Observation(concurrency, throughput, e2el, meets)


def _search(has_slo: bool, slo_e2el_ms: float | None, max_c: int = 256) -> list[int]:
    measured: dict[int, Observation] = {}
    order = []
    while (c := next_concurrency(measured, has_slo, max_c)) is not None:
        order.append(c)
        measured[c] = simulated(c, slo_e2el_ms=slo_e2el_ms)
        assert len(order) < 30
    return order


def test_saturation_rule() -> None:
    assert not is_saturated(simulated(4), simulated(8))  # doubled throughput
    assert is_saturated(simulated(8), simulated(16))  # same throughput, double latency
    assert is_saturated(Observation(4, 4, 100, None), Observation(8, 4.1, 120, None, failed=2))
    assert saturation_index([simulated(c) for c in (1, 2, 4, 8, 16, 32)]) == 4


def test_doubling_stops_at_saturation_without_slo() -> None:
    assert _search(has_slo=False, slo_e2el_ms=None) == [1, 2, 4, 8, 16]


def test_bisection_finds_highest_concurrency_meeting_slo() -> None:
    # e2el = 500 ms up to c=8, then 62.5 ms per extra request: 900 ms holds up to c=14
    order = _search(has_slo=True, slo_e2el_ms=900.0)
    assert order[:5] == [1, 2, 4, 8, 16]
    assert order[5:] == [12, 14, 15]
    assert simulated(14).meets_slo and not simulated(15).meets_slo


def test_cap_stops_the_search() -> None:
    assert _search(has_slo=False, slo_e2el_ms=None, max_c=4) == [1, 2, 4]


def _point(c: int, meets: bool | None, incomplete: bool = False) -> LoadPoint:
    obs = simulated(c)
    return LoadPoint(label=f"c{c}", max_concurrency=c, completed=10, request_throughput=obs.request_throughput,
                     median_e2el_ms=obs.median_e2el_ms, meets_slo=meets, incomplete=incomplete)


def test_capacity_summary() -> None:
    points = [_point(1, True), _point(4, True), _point(8, True), _point(16, False), _point(32, True, True)]
    summary = capacity_summary(points, {"e2el_p95_ms": 900}, "test")
    assert summary.max_rate_meeting_slo == 8 and summary.max_concurrency_meeting_slo == 8
    assert summary.saturation_reached and summary.saturation_concurrency == 16
    assert summary.saturation_rate == 8
    none_met = capacity_summary([_point(1, False)], {"e2el_p95_ms": 1}, "test")
    assert none_met.max_rate_meeting_slo is None and not none_met.saturation_reached
