"""`vlmopt compare`: synthetic profiles with a known shift are told apart at the chosen confidence, profiles drawn
from the same distribution are not (and the false-positive rate stays near 1 - confidence), per-request data is
used when present and the points' own values otherwise, and bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.unit.report_fixtures import make_profile
from vlmopt.bench.compare import compare_profiles
from vlmopt.bench.profile_writer import ProfileWriter
from vlmopt.cli import app
from vlmopt.schemas.profile import LoadPoint

runner = CliRunner()
REQUESTS = 200
OUTPUT_TOKENS = 64


def write_profile(path: Path, seed: int, ttft_scale: float = 1.0, tpot_scale: float = 1.0,
                  points: int = 3, per_request: bool = True) -> Path:
    """A profile whose requests have lognormal TTFT (median 180 ms x scale) and TPOT (median 12 ms x scale)."""
    rng = np.random.default_rng(seed)
    base = make_profile(run_id=f"run-{seed}")
    base.points = []
    writer = ProfileWriter.open(path, base, resume=False)
    for i in range(points):
        ttft = rng.lognormal(np.log(0.180 * ttft_scale), 0.35, REQUESTS)
        tpot = rng.lognormal(np.log(0.012 * tpot_scale), 0.2, REQUESTS)
        send = np.sort(rng.uniform(0, 30, REQUESTS))
        records = [
            {"index": k, "send_time": float(send[k]), "first_token_time": float(send[k] + ttft[k]),
             "end_time": float(send[k] + ttft[k] + tpot[k] * (OUTPUT_TOKENS - 1)), "output_tokens": OUTPUT_TOKENS,
             "success": True}
            for k in range(REQUESTS)
        ]
        duration = max(r["end_time"] for r in records)
        point = LoadPoint(
            label=f"c{2 ** i}", max_concurrency=2 ** i, num_prompts=REQUESTS, completed=REQUESTS, duration=duration,
            output_throughput=REQUESTS * OUTPUT_TOKENS / duration, median_ttft_ms=float(np.median(ttft) * 1000),
            p95_ttft_ms=float(np.quantile(ttft, 0.95) * 1000), median_tpot_ms=float(np.median(tpot) * 1000),
            p95_tpot_ms=float(np.quantile(tpot, 0.95) * 1000),
        )
        writer.add_point(point, records if per_request else [])
    writer.finish(True)
    if not per_request:
        writer.requests_path.unlink()
    return path


def by_metric(results) -> dict:
    return {r.metric: r for r in results}


def test_a_known_ttft_shift_is_found_and_an_unshifted_metric_is_not(tmp_path: Path) -> None:
    a = write_profile(tmp_path / "a.json", seed=1)
    b = write_profile(tmp_path / "b.json", seed=2, ttft_scale=1.25)
    labels, results = compare_profiles(a, b, confidence=0.95)
    got = by_metric(results)
    assert labels == ["c1", "c2", "c4"]
    ttft = got["ttft_p50_ms"]
    assert ttft.method == "per-request bootstrap" and ttft.points == 3
    assert ttft.verdict.startswith("B higher") and ttft.better == "A"
    assert 0.15 < ttft.relative_difference < 0.35 and ttft.ci_low > 0.1  # the true shift is +25 %
    tpot = got["tpot_p50_ms"]
    assert tpot.verdict == "no difference shown" and tpot.ci_low < 0 < tpot.ci_high


def test_a_faster_decoder_shows_up_as_lower_tpot_and_higher_throughput(tmp_path: Path) -> None:
    a = write_profile(tmp_path / "a.json", seed=3)
    b = write_profile(tmp_path / "b.json", seed=4, tpot_scale=0.8)
    got = by_metric(compare_profiles(a, b)[1])
    assert got["tpot_p95_ms"].better == "B" and got["tpot_p95_ms"].ci_high < 0
    assert got["output_throughput"].better == "B" and got["output_throughput"].ci_low > 0


def test_same_distribution_false_positives_stay_near_the_nominal_rate(tmp_path: Path) -> None:
    """40 pairs of profiles drawn from one distribution: at 90 % confidence about 10 % of the TTFT p50 verdicts may
    claim a difference by chance; far more would mean the intervals are too narrow."""
    flagged = 0
    for k in range(40):
        a = write_profile(tmp_path / f"a{k}.json", seed=100 + 2 * k, points=1)
        b = write_profile(tmp_path / f"b{k}.json", seed=101 + 2 * k, points=1)
        result = by_metric(compare_profiles(a, b, confidence=0.90, resamples=500, seed=k)[1])["ttft_p50_ms"]
        flagged += result.better is not None
    assert flagged <= 10  # expected 4; a binomial(40, 0.1) exceeds 10 with probability < 0.3 %


def test_without_request_records_the_point_values_are_compared(tmp_path: Path) -> None:
    a = write_profile(tmp_path / "a.json", seed=5, points=5, per_request=False)
    b = write_profile(tmp_path / "b.json", seed=6, points=5, per_request=False, ttft_scale=1.5)
    got = by_metric(compare_profiles(a, b)[1])
    assert got["ttft_p95_ms"].method == "per-point bootstrap" and got["ttft_p95_ms"].points == 5
    assert got["ttft_p95_ms"].better == "A"


def test_cli_prints_the_verdicts_and_writes_json(tmp_path: Path) -> None:
    a = write_profile(tmp_path / "a.json", seed=7)
    b = write_profile(tmp_path / "b.json", seed=8, ttft_scale=1.3)
    out = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(a), str(b), "--confidence", "0.9", "--json", str(out)],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "ttft_p50_ms" in result.output and "B higher" in result.output
    data = json.loads(out.read_text())
    assert data["confidence"] == 0.9 and {m["metric"] for m in data["metrics"]} >= {"ttft_p95_ms", "tpot_p50_ms"}
    assert next(m for m in data["metrics"] if m["metric"] == "ttft_p50_ms")["better"] == "A"


@pytest.mark.parametrize("case", ["missing", "no-common-point", "bad-confidence"])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    a = write_profile(tmp_path / "a.json", seed=9)
    args = ["compare", str(a), str(tmp_path / "nope.json")]
    if case == "no-common-point":
        b = write_profile(tmp_path / "b.json", seed=10, points=1)
        profile = json.loads(b.read_text())
        profile["points"][0]["label"] = "other"
        b.write_text(json.dumps(profile))
        args = ["compare", str(a), str(b)]
    elif case == "bad-confidence":
        args = ["compare", str(a), str(a), "--confidence", "1.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
