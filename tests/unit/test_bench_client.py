"""The streaming client against a small fake aiohttp server on 127.0.0.1: the happy path and every fault the
client must turn into a failed request with a reason."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from vlmopt.bench.client import ChatClient, SseParser
from vlmopt.bench.workload import RequestSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SPEC = RequestSpec(index=3, prompt="describe", images=["data:image/jpeg;base64,AAAA"], image_sizes=["56x56"],
                   max_tokens=4)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _token(text: str, finish: str | None = None) -> bytes:
    return _event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


USAGE = _event({"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46}})
DONE = b"data: [DONE]\n\n"


@dataclass
class FakeState:
    mode: str = "ok"
    bodies: list = field(default_factory=list)


STATE = web.AppKey("state", FakeState)


async def _stream(request: web.Request, parts: list[bytes], gap_s: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for part in parts:
        await resp.write(part)
        if gap_s:
            await asyncio.sleep(gap_s)
    return resp


async def _handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.bodies.append(await request.json())
    mode = state.mode
    tokens = [_token("a"), _token("b"), _token("c"), _token("d", "length")]
    if mode == "ok":
        return await _stream(request, [*tokens, USAGE, DONE], gap_s=0.01)
    if mode == "split":  # one event split across writes, CRLF line ends, a comment ping, several events per write
        blob = b": ping\r\n\r\n" + b"".join(tokens).replace(b"\n", b"\r\n") + USAGE + DONE
        return await _stream(request, [blob[i : i + 7] for i in range(0, len(blob), 7)])
    if mode == "malformed":
        return await _stream(request, [tokens[0], b"data: {not json\n\n", DONE])
    if mode == "truncated":
        return await _stream(request, tokens[:2])
    if mode == "empty":
        return await _stream(request, [USAGE, DONE])
    if mode == "stall":
        return await _stream(request, [tokens[0], b""], gap_s=5.0)
    if mode == "reset":
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(tokens[0])
        request.transport.abort()  # RST mid-stream
        return resp
    if mode == "error_event":
        return await _stream(request, [_event({"error": {"message": "engine dead", "code": 500}}), DONE])
    return web.Response(status=500, text="Internal failure: KV cache exhausted")


@pytest.fixture
async def fake_server():
    state = FakeState()
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # do not wait for the stalled handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _send(base: str, **kwargs: object):
    async with ChatClient(base, "tiny", **kwargs) as client:
        return await client.send(SPEC)


async def test_happy_path_times_and_usage(fake_server) -> None:
    app, base = fake_server
    result = await _send(base)
    assert result.success, result.error
    assert result.prompt_tokens == 42 and result.output_tokens == 4
    assert len(result.chunk_times) == 4 and len(result.itl) == 3
    assert 0 < result.ttft <= result.latency
    assert result.finish_reason == "length"
    assert min(result.itl) >= 0.005  # the server paused 10 ms between tokens
    body = app.bodies[0]
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["min_tokens"] == 4 and body["max_completion_tokens"] == 4
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "describe"}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


async def test_split_crlf_and_comments(fake_server) -> None:
    app, base = fake_server
    app.mode = "split"
    result = await _send(base)
    assert result.success, result.error
    assert len(result.chunk_times) == 4 and result.output_tokens == 4


@pytest.mark.parametrize(
    ("mode", "kind", "words"),
    [
        ("malformed", "malformed_sse", "not JSON"),
        ("truncated", "truncated", "without [DONE]"),
        ("empty", "no_tokens", "without any token"),
        ("reset", "connection", ""),
        ("http500", "http_500", "KV cache exhausted"),
        ("error_event", "server_error", "engine dead"),
    ],
)
async def test_faults_are_failed_requests_with_reasons(fake_server, mode: str, kind: str, words: str) -> None:
    app, base = fake_server
    app.mode = mode
    result = await _send(base)
    assert not result.success
    assert result.error_kind == kind, result.error
    assert words in (result.error or "")


async def test_stall_hits_the_stall_timeout(fake_server) -> None:
    app, base = fake_server
    app.mode = "stall"
    result = await _send(base, stall_timeout_s=0.3)
    assert not result.success and result.error_kind == "stall"
    assert len(result.chunk_times) == 1  # the token before the stall was seen


async def test_stall_hits_the_total_timeout(fake_server) -> None:
    app, base = fake_server
    app.mode = "stall"
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await _send(base, timeout_s=0.5)
    assert not result.success and result.error_kind == "timeout"
    assert loop.time() - started < 3


async def test_unreachable_server_is_a_connection_failure() -> None:
    result = await _send("http://127.0.0.1:9")  # discard port: nothing listens there
    assert not result.success and result.error_kind == "connection"


def test_sse_parser_keeps_partial_events_until_complete() -> None:
    parser = SseParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\n") == []
    assert parser.feed(b"\nda") == [b'{"a": 1}']
    assert parser.feed(b"ta: [DONE]") == []
    assert parser.flush() == [b"[DONE]"]


def test_record_round_trip_is_relative_to_origin() -> None:
    from vlmopt.bench.client import RequestResult

    r = RequestResult(index=1, send_time=10.0, first_token_time=10.5, chunk_times=[10.5, 10.7], end_time=10.7,
                      success=True, output_tokens=2)
    record = r.to_record(origin=10.0)
    assert record["send_time"] == 0.0 and record["chunk_times"] == [0.5, 0.7]
    assert RequestResult.from_record(record).output_tokens == 2
