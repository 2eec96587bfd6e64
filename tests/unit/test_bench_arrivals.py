"""Arrival schedules: reproducible for a seed, vLLM's rescaling to N/rate, burstiness changes the spread."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vlmopt.bench.arrivals import LoadSpec, arrival_offsets, parse_arrival


def test_same_seed_same_schedule_other_seed_differs() -> None:
    load = LoadSpec("poisson", rate=4.0)
    assert arrival_offsets(50, load, seed=7) == arrival_offsets(50, load, seed=7)
    assert arrival_offsets(50, load, seed=7) != arrival_offsets(50, load, seed=8)


@pytest.mark.parametrize("kind", ["poisson", "constant", "gamma"])
def test_last_arrival_is_rescaled_to_n_over_rate(kind: str) -> None:
    offsets = arrival_offsets(40, LoadSpec(kind, rate=8.0, burstiness=0.5), seed=1)
    assert offsets[-1] == pytest.approx(40 / 8.0)
    assert all(b >= a for a, b in itertools.pairwise(offsets))


def test_constant_is_evenly_spaced() -> None:
    offsets = arrival_offsets(4, LoadSpec("constant", rate=2.0))
    assert offsets == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_lower_burstiness_is_burstier() -> None:
    def gap_cv(burstiness: float) -> float:
        gaps = np.diff(arrival_offsets(4000, LoadSpec("gamma", rate=10.0, burstiness=burstiness), seed=3))
        return float(np.std(gaps) / np.mean(gaps))

    # gamma(shape k) gaps have coefficient of variation 1/sqrt(k): 2 for k=0.25, 1 for Poisson, 0.5 for k=4
    assert gap_cv(0.25) == pytest.approx(2.0, rel=0.15)
    assert gap_cv(1.0) == pytest.approx(1.0, rel=0.1)
    assert gap_cv(4.0) == pytest.approx(0.5, rel=0.1)


def test_concurrency_releases_everything_at_once() -> None:
    assert arrival_offsets(3, LoadSpec("concurrency", max_concurrency=2)) == [0.0, 0.0, 0.0]


def test_labels_and_validation() -> None:
    assert LoadSpec("concurrency", max_concurrency=4).label == "c4"
    assert LoadSpec("gamma", rate=2.5, burstiness=0.5).label == "gamma-r2.5-b0.5"
    assert LoadSpec("poisson", rate=2, max_concurrency=8).label == "poisson-r2-c8"
    with pytest.raises(ValueError):
        LoadSpec("poisson")
    with pytest.raises(ValueError):
        LoadSpec("concurrency", max_concurrency=0)


def test_parse_arrival() -> None:
    assert parse_arrival("poisson") == ("poisson", 1.0)
    assert parse_arrival("gamma:0.5") == ("gamma", 0.5)
    for bad in ("gamma:x", "gamma:0", "uniform"):
        with pytest.raises(ValueError):
            parse_arrival(bad)
