"""The campaign's expected cost: startup + points x seconds per point per job, a MIG slice paying its share of the
GPU at the catalog's price, each figure with its source."""

from __future__ import annotations

import pytest

from tests.unit.campaign_fixtures import bench
from vlmopt.campaign.cost import (
    DEFAULT_POINT_S,
    DEFAULT_STARTUP_S,
    estimate_job,
    hours_between,
    run_seconds,
    startup,
    sweep_concurrencies,
)
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.schemas.campaign import CampaignTarget
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model

PRICES = load_model(PriceCatalog, data_file("prices.yaml"))


def test_concurrency_points_are_bounded_by_the_slo_request_time() -> None:
    points, point_s, how = run_seconds(bench(), None)
    per_request = 0.5 + 31 * 0.05  # TTFT p95 + (output tokens - 1) x TPOT p95
    assert points == 3
    assert point_s == pytest.approx((64 + 16 + 4) * per_request / 3)
    assert how.kind == "estimated" and "ttft_p95_ms 500 ms + 31 x tpot_p95_ms 50 ms" in how.source


def test_duration_rate_sweep_and_no_slo() -> None:
    points, point_s, how = run_seconds(bench(duration_s=60.0, num_prompts=None), None)
    assert (points, point_s, how.kind) == (3, pytest.approx(60 + 2.05), "user")
    points, point_s, _ = run_seconds(bench(concurrency=[], rates=[2.0, 8.0], slo={"e2el_p95_ms": 4000.0}), None)
    assert (points, point_s) == (2, pytest.approx((64 / 2 + 4 + 64 / 8 + 4) / 2))
    assert sweep_concurrencies(64) == [1, 2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64]
    points, _, _ = run_seconds(bench(sweep=True, sweep_max_concurrency=64), None)
    assert points == 12
    points, point_s, how = run_seconds(bench(slo={}), None)
    assert point_s == DEFAULT_POINT_S and "assumed" in how.source and "--point-seconds" in how.source
    assert run_seconds(bench(), 30.0)[1:] == (30.0, run_seconds(bench(), 30.0)[2])


def test_a_mig_slice_pays_its_share_at_the_catalog_price() -> None:
    gpu = load_gpu_catalog().get("h100-sxm-80gb")
    target = CampaignTarget(gpu="h100-sxm-80gb", slice="3g.40gb", cloud="aws", region="us-east-1",
                            instance_type="p5.4xlarge")
    startup_s, startup_prov = startup(None)
    estimate = estimate_job(bench(), target, gpu, PRICES, "vlmopt/data/prices.yaml", startup_s, startup_prov)
    run_s = DEFAULT_STARTUP_S + 2 * 2.05 + 3 * estimate.point_s  # startup + 2 warm-up requests + points
    assert estimate.gpu_share == pytest.approx(3 / 7, abs=1e-4)
    assert estimate.gpu_hours == pytest.approx(run_s / 3600 * 3 / 7, abs=1e-4)
    assert estimate.usd_per_gpu_hour == pytest.approx(6.88)  # p5.4xlarge on-demand, one H100
    assert estimate.usd == pytest.approx(estimate.gpu_hours * 6.88, abs=1e-3)
    assert estimate.price_provenance.kind == "catalog" and "p5.4xlarge on_demand" in estimate.price_provenance.source
    assert estimate.startup_provenance.kind == "estimated" and "assumed 10 min" in estimate.startup_provenance.source


def test_without_a_cloud_the_cheapest_row_is_a_labelled_reference() -> None:
    gpu = load_gpu_catalog().get("l4-24gb")
    spot = CampaignTarget(gpu="l4-24gb", market="spot")
    estimate = estimate_job(bench(), spot, gpu, PRICES, "prices.yaml", *startup(5.0))
    assert estimate.startup_s == 300 and estimate.startup_provenance.source == "--startup-minutes 5"
    assert "cheapest listed, as a reference" in estimate.price_provenance.source
    assert estimate.usd_per_gpu_hour == pytest.approx(0.399)  # g6.xlarge spot, below the 8-GPU row's 6.28/8=0.785
    none = estimate_job(bench(), CampaignTarget(gpu="a30-24gb"), load_gpu_catalog().get("a30-24gb"), PRICES,
                        "prices.yaml", *startup(None))
    assert none.usd is None and none.price_provenance is None


def test_actual_hours_from_start_and_end() -> None:
    assert hours_between("2026-11-20T08:00:00Z", "2026-11-20T09:30:00+00:00", 3 / 7) == pytest.approx(1.5 * 3 / 7,
                                                                                                      abs=1e-4)
    assert hours_between("2026-11-20T08:00:00Z", None, 1.0) is None
    assert hours_between("2026-11-20T09:00:00Z", "2026-11-20T08:00:00Z", 1.0) is None
