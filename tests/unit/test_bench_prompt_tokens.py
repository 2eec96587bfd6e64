"""Prompt sizing against a running server: with the server's /tokenize the text it counts is what was asked for; a
server without /tokenize gets word-sized prompts, a warning, and points marked when the tokens sent differ by more
than 5%. The fake's tokenizer is deliberately not one token per word (two per word, plus a BOS), like a BPE that
splits the benchmark's words; its chat template adds 3 tokens and each image 16.

Also the point fields on their own (pure function) and older profiles without the new fields still loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from tests.unit.test_bench_runner import IMAGE_TOKENS, FakeVllm
from vlmopt.bench.client import RequestResult
from vlmopt.bench.metrics import input_token_fields
from vlmopt.bench.tokens import ServerTokenCounter, server_token_counter
from vlmopt.cli import app
from vlmopt.schemas import BenchmarkProfile, load_model

TEMPLATE_TOKENS = 3  # "USER: " ... "ASSISTANT:" of the fake's chat template, BOS included
TOKENS_PER_WORD = 2


def _text_tokens(text: str) -> int:
    return TOKENS_PER_WORD * len(text.split())


class TokenizingVllm(FakeVllm):
    """FakeVllm whose usage follows a two-tokens-per-word tokenizer, and which serves POST /tokenize like vLLM."""

    def __init__(self, with_tokenize: bool = True) -> None:
        super().__init__()
        self.with_tokenize = with_tokenize
        self.tokenize_calls = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        parts = body["messages"][0]["content"]
        text = " ".join(p["text"] for p in parts if p["type"] == "text")
        images = sum(1 for p in parts if p["type"] == "image_url")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = body["max_completion_tokens"]
        for i in range(n):
            event = {"choices": [{"index": 0, "delta": {"content": "x"},
                                  "finish_reason": "length" if i == n - 1 else None}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        usage = {"prompt_tokens": TEMPLATE_TOKENS + _text_tokens(text) + IMAGE_TOKENS * images,
                 "completion_tokens": n}
        await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
        self.served += 1
        return resp

    async def tokenize(self, request: web.Request) -> web.Response:
        self.tokenize_calls += 1
        body = await request.json()
        if body.get("model") != "fake":
            return web.json_response({"error": {"message": "model not found", "code": 404}}, status=404)
        count = _text_tokens(body["prompt"]) + (1 if body.get("add_special_tokens", True) else 0)
        return web.json_response({"count": count, "max_model_len": 1024, "tokens": list(range(count))})

    def add_routes(self, webapp: web.Application) -> None:
        if self.with_tokenize:
            webapp.router.add_post("/tokenize", self.tokenize)


def _benchmark(url: str, out: Path, input_tokens: int = 33):
    return CliRunner().invoke(app, ["benchmark", "--endpoint", url, "--model", "fake", "--input-tokens",
                                    str(input_tokens), "--output-tokens", "2", "--num-prompts", "4", "--warmup", "1",
                                    "--concurrency", "2", "--out", str(out)])


def test_server_tokenize_sizes_prompts_exactly(tmp_path: Path) -> None:
    with TokenizingVllm() as server:
        counter = server_token_counter(server.url, "fake")
        assert isinstance(counter, ServerTokenCounter) and counter.special_tokens == 1
        assert counter.count("red green blue") == 6
        result = _benchmark(server.url, tmp_path)
        assert result.exit_code == 0, result.output
        assert "prompts sized with the server /tokenize" in " ".join(result.output.split())
    (path,) = tmp_path.rglob("*.json")
    profile = load_model(BenchmarkProfile, path)
    workload = profile.workload
    assert workload.prompt_tokenizer == f"server /tokenize at {server.url}"
    assert workload.tokenizer_special_tokens == 1
    # probe: usage(text) - count(text) - specials = 3 template tokens (one of them the BOS, counted by input_tokens)
    assert workload.chat_template_tokens == TEMPLATE_TOKENS - 1
    (point,) = profile.points
    assert point.requested_input_tokens == 33
    assert point.mean_text_input_tokens == 33 and point.input_tokens_deviation == 0
    assert point.mean_image_input_tokens == IMAGE_TOKENS and not point.input_tokens_mismatch
    # what the server counted per request: template + 32 text tokens (33 minus the BOS) + one image
    assert point.mean_prompt_tokens == TEMPLATE_TOKENS + 32 + IMAGE_TOKENS


def test_server_without_tokenize_is_sized_by_words_warned_and_marked(tmp_path: Path) -> None:
    with TokenizingVllm(with_tokenize=False) as server:
        assert server_token_counter(server.url, "fake") is None
        result = _benchmark(server.url, tmp_path)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines at the console width
    assert "prompts are sized by words" in output
    assert "not the 33 asked for" in output and "(prompt tokens off)" in output
    (path,) = tmp_path.rglob("*.json")
    profile = load_model(BenchmarkProfile, path)
    assert profile.workload.prompt_tokenizer.startswith("words")
    (point,) = profile.points
    # 33 words at two tokens each, with the template's tokens (unknown without a tokenizer) left in
    assert point.mean_text_input_tokens == 2 * 33 + TEMPLATE_TOKENS
    assert point.input_tokens_mismatch and point.input_tokens_deviation > 1
    assert "input_tokens_mismatch" in path.with_suffix(".csv").read_text().splitlines()[0]


def test_input_token_fields_split_text_and_image() -> None:
    def done(prompt_tokens: int, sizes: list[str]) -> RequestResult:
        return RequestResult(index=0, prompt_tokens=prompt_tokens, image_sizes=sizes, num_images=len(sizes),
                             success=True)

    results = [done(5 + 40 + 16, ["56x56"]), done(5 + 42 + 32, ["56x56", "56x56"]), RequestResult(index=2)]
    fields = input_token_fields(results, 40, {"56x56": 16}, 5)
    assert fields["mean_image_input_tokens"] == 24 and fields["mean_text_input_tokens"] == 41
    assert fields["input_tokens_deviation"] == pytest.approx(0.025) and not fields["input_tokens_mismatch"]
    assert input_token_fields(results, 38, {"56x56": 16}, 5)["input_tokens_mismatch"]  # 41 vs 38: +7.9%
    unknown_size = input_token_fields([done(60, ["99x99"])], 40, {"56x56": 16}, 5)
    assert unknown_size["mean_text_input_tokens"] is None and not unknown_size["input_tokens_mismatch"]
    dataset = input_token_fields(results, None, {"56x56": 16}, 5)
    assert dataset["requested_input_tokens"] is None and dataset["input_tokens_deviation"] is None


def test_profile_written_before_the_fields_existed_still_loads(tmp_path: Path) -> None:
    old = {
        "model": "m", "variant": "v", "device": {"kind": "cpu", "name": "cpu"}, "engine": {},
        "workload": {"input_tokens": 32, "image_tokens_per_image": {"56x56": 16}},
        "points": [{"label": "c1", "completed": 4, "mean_prompt_tokens": 60.0}],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    profile = load_model(BenchmarkProfile, path)
    assert profile.workload.prompt_tokenizer is None and profile.model_hub is None
    assert profile.points[0].requested_input_tokens is None and not profile.points[0].input_tokens_mismatch
