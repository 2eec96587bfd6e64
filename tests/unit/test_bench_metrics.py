"""Metrics math against hand-computed values (vllm bench serve's definitions)."""

from __future__ import annotations

import pytest

from vlmopt.bench.client import RequestResult
from vlmopt.bench.metrics import compute_point_metrics, parse_slo, point_meets_slo, slo_stat_key


def _ok(index: int, send: float, chunks: list[float], prompt: int, out: int, sizes=("56x56",)) -> RequestResult:
    return RequestResult(index=index, send_time=send, first_token_time=chunks[0], chunk_times=list(chunks),
                         end_time=chunks[-1], prompt_tokens=prompt, output_tokens=out, success=True,
                         num_images=len(sizes), image_sizes=list(sizes))


def _failed(index: int, kind: str) -> RequestResult:
    return RequestResult(index=index, send_time=0.0, success=False, error_kind=kind, error=f"{kind} happened")


# r0: TTFT 0.1, E2EL 0.5, 5 tokens -> TPOT (0.5-0.1)/4 = 0.1; ITLs 0.1 x4
# r1: TTFT 0.3, E2EL 0.4, 3 tokens -> TPOT 0.05; ITLs 0.05, 0.05
# r2: TTFT 0.2, E2EL 0.2, 1 token -> no TPOT (goodput counts it as 0)
RESULTS = [
    _ok(0, 0.0, [0.1, 0.2, 0.3, 0.4, 0.5], prompt=40, out=5),
    _ok(1, 1.0, [1.3, 1.35, 1.4], prompt=60, out=3),
    _ok(2, 2.0, [2.2], prompt=50, out=1, sizes=("56x56", "112x112")),
    _failed(3, "timeout"),
    _failed(4, "http_500"),
    _failed(5, "timeout"),
]


def test_throughput_and_counts() -> None:
    m = compute_point_metrics(RESULTS, duration_s=2.0)
    assert (m["completed"], m["failed"], m["num_prompts"]) == (3, 3, 6)
    assert m["total_input_tokens"] == 150 and m["total_output_tokens"] == 9
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["output_throughput"] == pytest.approx(4.5)
    assert m["total_token_throughput"] == pytest.approx(79.5)
    assert m["images_per_s"] == pytest.approx(2.0)  # 4 images in completed requests / 2 s
    assert m["errors"] == {"timeout": 2, "http_500": 1}
    assert m["error_examples"]["http_500"] == "http_500 happened"
    assert m["mean_prompt_tokens"] == pytest.approx(50.0)


def test_latency_statistics() -> None:
    m = compute_point_metrics(RESULTS, duration_s=2.0)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["std_ttft_ms"] == pytest.approx((20000 / 3) ** 0.5)  # population std of 100, 300, 200
    assert m["mean_e2el_ms"] == pytest.approx((500 + 400 + 200) / 3)
    assert m["mean_tpot_ms"] == pytest.approx(75.0)  # (100 + 50) / 2: the 1-token request is left out
    assert m["p99_tpot_ms"] == pytest.approx(50 + 0.99 * 50)  # numpy linear interpolation between 50 and 100
    assert m["mean_itl_ms"] == pytest.approx((4 * 100 + 2 * 50) / 6)
    assert m["p90_e2el_ms"] == pytest.approx(400 + 0.8 * 100)


def test_goodput_requires_every_threshold_and_meets_slo() -> None:
    slo = {"ttft_p95_ms": 250.0, "tpot_p95_ms": 80.0}
    m = compute_point_metrics(RESULTS, duration_s=2.0, slo=slo)
    # r0: TTFT ok, TPOT 100 > 80 -> bad; r1: TTFT 300 > 250 -> bad; r2: TTFT 200 ok, TPOT 0 ok -> good
    assert m["request_goodput"] == pytest.approx(0.5)
    assert m["good_fraction"] == pytest.approx(1 / 6)
    assert m["meets_slo"] is False  # failed requests can never meet an SLO
    ok_only = compute_point_metrics(RESULTS[:3], duration_s=2.0, slo={"ttft_p95_ms": 300.0, "tpot_p95_ms": 100})
    assert ok_only["meets_slo"] is True
    assert compute_point_metrics(RESULTS[:3], 2.0, slo={"ttft_p95_ms": 250.0})["meets_slo"] is False


def test_no_slo_means_no_goodput() -> None:
    m = compute_point_metrics(RESULTS, duration_s=2.0)
    assert m["request_goodput"] is None and m["meets_slo"] is None


def test_image_token_share_uses_measured_tokens_per_size() -> None:
    m = compute_point_metrics(RESULTS, 2.0, tokens_per_image={"56x56": 17, "112x112": 17})
    assert m["image_token_share"] == pytest.approx((17 + 17 + 34) / 150)
    assert compute_point_metrics(RESULTS, 2.0, tokens_per_image={"56x56": 17})["image_token_share"] is None


def test_all_failed_point_has_no_latencies() -> None:
    m = compute_point_metrics([_failed(0, "connection")], duration_s=1.0)
    assert m["completed"] == 0 and m["mean_ttft_ms"] is None and m["p99_e2el_ms"] is None
    assert m["request_throughput"] == 0


def test_parse_slo_and_keys() -> None:
    assert parse_slo("ttft_p95_ms=500, tpot_p95_ms=50") == {"ttft_p95_ms": 500.0, "tpot_p95_ms": 50.0}
    assert slo_stat_key("e2el_median_ms") == "median_e2el_ms"
    assert slo_stat_key("ttft_p99.9_ms") == "p99.9_ttft_ms"
    for bad, words in [("ttft_p95=500", "ttft_p95"), ("ttft_p95_ms=fast", "not a number"),
                       ("ttft_p95_ms", "KEY=MILLISECONDS"), ("ttft_p95_ms=-1", "> 0")]:
        with pytest.raises(ValueError, match=words):
            parse_slo(bad)


def test_slo_percentile_not_in_defaults_is_computed() -> None:
    m = compute_point_metrics(RESULTS[:3], 2.0, slo={"ttft_p50_ms": 250.0})
    assert m["p50_ttft_ms"] == pytest.approx(200.0)
    assert point_meets_slo(m, {"ttft_p50_ms": 250.0})
