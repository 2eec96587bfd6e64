"""The runner and CLI against a fake OpenAI-compatible server (with /metrics) on 127.0.0.1, in a thread:
profile written incrementally, --resume, server death mid-run, Ctrl-C, unreachable endpoint, bad input."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from vlmopt.bench.arrivals import LoadSpec
from vlmopt.bench.host_costs import SERVER_PROBE_REQUESTS
from vlmopt.bench.loadgen import PointInterrupted
from vlmopt.bench.profile_writer import ProfileWriter, csv_path_for
from vlmopt.bench.runner import BenchmarkFailed, BenchOptions, Endpoint, UserCancelled, _run_and_finish, new_profile
from vlmopt.bench.server import ServerDiedError
from vlmopt.bench.targets import endpoint_target
from vlmopt.cli import app
from vlmopt.schemas import BenchmarkProfile, DeviceInfo, EngineInfo, load_model

IMAGE_TOKENS = 16


class FakeVllm:
    """Streams 4 tokens per request; prompt tokens = 10 + 16 per image; counts requests; exposes /metrics."""

    def __init__(self) -> None:
        self.served = 0
        self.mm_queries = 0
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        images = sum(1 for p in body["messages"][0]["content"] if p["type"] == "image_url")
        self.mm_queries += images
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = body["max_completion_tokens"]
        for i in range(n):
            await asyncio.sleep(0.002)
            event = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length" if i == n - 1
                                  else None}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        usage = {"prompt_tokens": 10 + IMAGE_TOKENS * images, "completion_tokens": n}
        await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
        self.served += 1
        return resp

    async def metrics(self, request: web.Request) -> web.Response:
        text = (f'vllm:mm_cache_queries_total{{model_name="fake"}} {self.mm_queries}\n'
                'vllm:mm_cache_hits_total{model_name="fake"} 0\n'
                'vllm:kv_cache_usage_perc{model_name="fake"} 0.25\n')
        return web.Response(text=text)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "fake"}]})

    def add_routes(self, webapp: web.Application) -> None:
        """More endpoints, for subclasses."""

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        webapp = web.Application()
        webapp.router.add_post("/v1/chat/completions", self.chat)
        webapp.router.add_get("/metrics", self.metrics)
        webapp.router.add_get("/v1/models", self.models)
        self.add_routes(webapp)
        runner = web.AppRunner(webapp, shutdown_timeout=0.1)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> FakeVllm:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def fake() -> Iterator[FakeVllm]:
    with FakeVllm() as server:
        yield server


def _cli(*args: str):
    return CliRunner().invoke(app, ["benchmark", *args])


COMMON = ("--model", "fake", "--num-prompts", "6", "--output-tokens", "4", "--input-tokens", "8", "--warmup", "1")


def test_endpoint_benchmark_writes_profile_jsonl_and_csv(fake: FakeVllm, tmp_path: Path) -> None:
    result = _cli("--endpoint", fake.url, *COMMON, "--concurrency", "1,2", "--out", str(tmp_path),
                  "--slo", "ttft_p95_ms=2000")
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.rglob("*.json")
    profile = load_model(BenchmarkProfile, path)
    assert profile.complete and [p.label for p in profile.points] == ["c1", "c2"]
    assert profile.workload.image_tokens_per_image == {"56x56": IMAGE_TOKENS}
    point = profile.points[0]
    assert point.completed == 6 and point.total_output_tokens == 24
    assert point.image_token_share == pytest.approx(16 / 26)
    assert point.max_kv_cache_usage_perc == 0.25 and point.mm_cache_hit_rate == 0.0
    assert point.meets_slo is True and profile.capacity.max_concurrency_meeting_slo in (1, 2)
    records = (path.parent / profile.requests_file).read_text().splitlines()
    assert len(records) == 12 and json.loads(records[0])["point"] == "c1"
    assert csv_path_for(path).read_text().startswith("variant,device,label")
    # measured + warm-up + image-token probe (text alone, text + image) + host-cost probe (text and image requests)
    assert fake.served == 12 + 1 + 2 + 2 * SERVER_PROBE_REQUESTS
    assert profile.client is not None and profile.client.metrics_interval_s == 1.0
    assert profile.client.event_loop in ("uvloop", "asyncio")


def test_resume_keeps_finished_points(fake: FakeVllm, tmp_path: Path) -> None:
    assert _cli("--endpoint", fake.url, *COMMON, "--concurrency", "1", "--out", str(tmp_path)).exit_code == 0
    served = fake.served
    result = _cli("--endpoint", fake.url, *COMMON, "--concurrency", "1,2", "--out", str(tmp_path), "--resume")
    assert result.exit_code == 0, result.output
    assert "kept from the saved profile" in result.output
    assert fake.served - served == 6 + 3 + 2 * SERVER_PROBE_REQUESTS  # only c2 measured again (+ warm-up, probes)
    (path,) = tmp_path.rglob("*.json")
    assert [p.label for p in load_model(BenchmarkProfile, path).points] == ["c1", "c2"]
    other = _cli("--endpoint", fake.url, *COMMON, "--input-tokens", "9", "--out", str(tmp_path), "--resume")
    assert other.exit_code == 1 and "same workload" in other.output


def _writer(tmp_path: Path, fake: FakeVllm, opts: BenchOptions) -> ProfileWriter:
    target = endpoint_target(fake.url, "fake")
    path = tmp_path / "p.json"
    return ProfileWriter.open(path, new_profile(target, DeviceInfo(kind="unknown", name="x"), EngineInfo(), opts,
                                                path), resume=False)


def _dies_after(fake: FakeVllm, n: int, error: Exception):
    def check() -> None:
        if fake.served >= n:
            raise error
    return check


def test_server_death_keeps_completed_requests_and_marks_incomplete(fake: FakeVllm, tmp_path: Path) -> None:
    opts = BenchOptions(num_prompts=400, output_tokens=4, warmup=0, out_dir=tmp_path,
                        loads=[LoadSpec("concurrency", max_concurrency=2)])
    writer = _writer(tmp_path, fake, opts)
    endpoint = Endpoint(fake.url, "fake", EngineInfo(),
                        _dies_after(fake, 10, ServerDiedError("vLLM server died (exit code -9). Last lines: OOM")))
    with pytest.raises(BenchmarkFailed, match="died during point c2") as err:
        _run_and_finish(endpoint, opts, writer, _silent(), None)
    assert "OOM" in str(err.value)
    profile = load_model(BenchmarkProfile, writer.path)
    assert not profile.complete and "server died" in profile.incomplete_reason
    (point,) = profile.points
    assert point.incomplete and 8 <= point.completed < 400 and point.meets_slo is None
    assert len(writer.requests_path.read_text().splitlines()) == point.completed + point.failed


def test_ctrl_c_keeps_what_was_measured(fake: FakeVllm, tmp_path: Path) -> None:
    opts = BenchOptions(num_prompts=400, output_tokens=4, warmup=0, out_dir=tmp_path,
                        loads=[LoadSpec("concurrency", max_concurrency=2)])
    writer = _writer(tmp_path, fake, opts)
    endpoint = Endpoint(fake.url, "fake", EngineInfo(), _dies_after(fake, 10, UserCancelled("interrupted")))
    with pytest.raises(PointInterrupted):
        _run_and_finish(endpoint, opts, writer, _silent(), None)
    profile = load_model(BenchmarkProfile, writer.path)
    assert not profile.complete and "interrupted" in profile.incomplete_reason
    assert profile.points[0].incomplete and profile.points[0].completed >= 8


def test_unreachable_endpoint_fails_fast_with_address(tmp_path: Path) -> None:
    result = _cli("--endpoint", "http://127.0.0.1:9", "--model", "m", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "http://127.0.0.1:9" in result.output and "unreachable" in result.output
    assert not any(tmp_path.rglob("*.json"))


@pytest.mark.parametrize(
    ("args", "words"),
    [(("--endpoint", "http://x", "--model", "m", "--slo", "ttft=5"), "SLO"),
     (("--endpoint", "http://x", "--model", "m", "--image-size", "big"), "WIDTHxHEIGHT"),
     (("--endpoint", "http://x", "--model", "m", "--image-style", "cartoon"), "--image-style"),
     (("--endpoint", "http://x", "--model", "m", "--concurrency", "1", "--rate", "2"), "exclusive"),
     (("--endpoint", "http://x"), "--model"),
     (("no/such/manifest.json",), "not found")],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    result = _cli(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_event_loop_setting_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMOPT_EVENT_LOOP", "trio")
    result = _cli("--endpoint", "http://x", "--model", "m", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "VLMOPT_EVENT_LOOP" in result.output, result.output
    assert not (tmp_path / "out").exists()


def _silent():
    from vlmopt.bench.runner import SilentProgress

    return SilentProgress()
