"""`vlmopt benchmark` on the real vLLM server (serve env) with the tiny VLM: bf16 on the shared `tiny_server`
(through --endpoint), fp8 and int8 from the quantized manifest (one server each, started by the command itself).

Kept small on purpose (CI has 2 cores): 8 prompts per point, concurrency 1 and 4. 128 output tokens: with
shorter outputs the API server (image preprocessing, SSE) rather than the engine bounds a tiny model on 2 cores,
and batching 4 requests then barely raises throughput.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmopt.cli import app
from vlmopt.schemas import BenchmarkProfile, load_model
from vlmopt.testing.tiny_vlm import TinyVlmSpec

WORKLOAD = ["--input-tokens", "32", "--output-tokens", "128", "--num-prompts", "8", "--warmup", "1",
            "--concurrency", "1,4", "--slo", "ttft_p95_ms=5000,tpot_p95_ms=500"]
IMAGE_TOKENS = TinyVlmSpec().image_tokens  # 16 for a 56x56 image with 14-pixel patches


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["benchmark", *args])
    assert result.exit_code == 0, result.output


def _profiles(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.json"))


@pytest.fixture(scope="module")
def bf16_profile(tiny_server, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-bf16")
    _run(["--endpoint", tiny_server.base_url, "--model", tiny_server.model_name, "--out", str(out), *WORKLOAD])
    (path,) = _profiles(out)
    return path


@pytest.fixture(scope="module")
def quantized_profiles(tiny_variants, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bench-quant")
    _run([str(tiny_variants), "--variant", "fp8", "--variant", "int8", "--out", str(out), *WORKLOAD])
    found = {load_model(BenchmarkProfile, p).variant: p for p in _profiles(out)}
    assert set(found) == {"fp8", "int8"}, found
    return found


def _check_profile(path: Path) -> BenchmarkProfile:
    profile = load_model(BenchmarkProfile, path)  # schema-valid or ContractError
    assert profile.complete and profile.provenance and profile.provenance.kind == "measured"
    assert [p.label for p in profile.points] == ["c1", "c4"]
    assert profile.workload.image_tokens_per_image["56x56"] >= IMAGE_TOKENS
    for point in profile.points:
        assert point.completed == 8 and point.failed == 0, point.errors
        assert point.total_output_tokens == 8 * 128  # ignore_eos: exact output length (vLLM stops only at max_tokens)
        assert point.median_ttft_ms <= point.median_e2el_ms and point.p99_ttft_ms <= point.p99_e2el_ms
        # usage.prompt_tokens counts every prompt token, image tokens included: 32 text + 16 image + template
        assert point.mean_prompt_tokens >= 32 + IMAGE_TOKENS
        # Prompts sized in the model's own tokenizer: the text the server counted is what was asked for (within 5%,
        # the tolerance that marks a point), image and template tokens told apart by the warm-up probe.
        assert point.requested_input_tokens == 32 and not point.input_tokens_mismatch
        assert abs(point.input_tokens_deviation) <= 0.05, (point.mean_text_input_tokens, point.mean_prompt_tokens)
        assert point.mean_image_input_tokens == profile.workload.image_tokens_per_image["56x56"]
        assert 0 < point.image_token_share < 1
        assert point.max_kv_cache_usage_perc is not None
    c1, c4 = profile.points
    # Continuous batching: 4 concurrent requests finish faster than 4 one after another. Only "rises" is asserted:
    # on a shared 2-core box the gain measured 1.03x-3.3x for int8 (the API server, not the engine, binds there).
    assert c4.request_throughput > c1.request_throughput, (c1.request_throughput, c4.request_throughput)
    records = [json.loads(line) for line in (path.parent / profile.requests_file).read_text().splitlines()]
    assert len(records) == 16
    for record in records:
        assert record["success"] and record["first_token_time"] <= record["end_time"]
        assert record["prompt_tokens"] >= 32 + IMAGE_TOKENS
    assert path.with_suffix(".csv").is_file()
    return profile


def test_bf16_on_shared_server(bf16_profile: Path) -> None:
    profile = _check_profile(bf16_profile)
    assert profile.engine.endpoint is not None
    assert profile.workload.prompt_tokenizer.startswith("server /tokenize")  # a remote model: the server counts
    assert profile.workload.chat_template_tokens is not None and profile.workload.chat_template_tokens >= 0


def test_tokenizer_given_as_hub_id_from_the_cache(tiny_server, tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--tokenizer org/name resolved offline from a pre-filled hub cache sizes prompts as the server would."""
    from tests.hub_cache import fill_hub_cache

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hub_cache(tmp_path / "hf-cache", "vlmopt-test/tiny-llava", tiny_model_dir)
    out = tmp_path / "out"
    _run(["--endpoint", tiny_server.base_url, "--model", tiny_server.model_name, "--tokenizer",
          "vlmopt-test/tiny-llava", "--out", str(out), "--input-tokens", "48", "--output-tokens", "4",
          "--num-prompts", "8", "--warmup", "0", "--concurrency", "4"])
    (path,) = _profiles(out)
    profile = load_model(BenchmarkProfile, path)
    assert profile.workload.prompt_tokenizer.startswith("tokenizer of vlmopt-test/tiny-llava@")
    (point,) = profile.points
    assert point.requested_input_tokens == 48 and abs(point.input_tokens_deviation) <= 0.05, point


@pytest.mark.parametrize("variant", ["fp8", "int8"])
def test_quantized_variants(quantized_profiles: dict[str, Path], variant: str) -> None:
    profile = _check_profile(quantized_profiles[variant])
    assert profile.variant_method == variant
    assert profile.engine.server_args is not None and profile.engine.version  # recorded server arguments
    assert profile.server_log and Path(profile.server_log).is_file()
    log = Path(profile.server_log).read_text(errors="replace")
    # No --quantization flag was passed: vLLM must have read the checkpoint's compressed-tensors config.
    assert "compressed-tensors" in log or "compressed_tensors" in log, "vLLM did not load the quantization config"


def test_image_reuse_raises_mm_cache_hit_rate(tiny_server, tmp_path: Path) -> None:
    rates = {}
    for reuse in ("0", "0.9"):
        out = tmp_path / f"reuse-{reuse}"
        _run(["--endpoint", tiny_server.base_url, "--model", tiny_server.model_name, "--out", str(out),
              "--input-tokens", "16", "--output-tokens", "4", "--num-prompts", "16", "--warmup", "0",
              "--concurrency", "4", "--image-reuse", reuse])
        (path,) = _profiles(out)
        rates[reuse] = load_model(BenchmarkProfile, path).points[0].mm_cache_hit_rate
    assert rates["0"] is not None and rates["0.9"] is not None, rates
    assert rates["0"] < 0.1, rates
    assert rates["0.9"] > rates["0"] + 0.5, rates
