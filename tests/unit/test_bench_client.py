"""The streaming client against a small fake aiohttp server on 127.0.0.1: the happy path and every fault the
client must turn into a failed request with a reason; and its fast SSE/JSON paths against a plain reference reading
on generated streams cut at random points."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmopt.bench.client import ChatClient, RequestResult, SseParser, _apply_event
from vlmopt.bench.loadgen import paused_gc
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
    if mode == "compact":  # vLLM's own bytes: compact JSON, one event per write, usage and [DONE] in one write
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "tiny"}
        compact = [b"data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {"content": t}, "logprobs": None,
                                                                  "finish_reason": f}]}, separators=(",", ":")).encode()
                   + b"\n\n" for t, f in (("a", None), ('"q"', None), ("\u00e9", None), ("d", "length"))]
        usage = {**head, "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46}}
        tail = b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n" + DONE
        return await _stream(request, [*compact, tail])
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
    assert body["ignore_eos"] is True and body["max_completion_tokens"] == 4
    assert "min_tokens" not in body  # redundant with ignore_eos; vllm bench serve does not send it either
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "describe"}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


async def test_split_crlf_and_comments(fake_server) -> None:
    app, base = fake_server
    app.mode = "split"
    result = await _send(base)
    assert result.success, result.error
    assert len(result.chunk_times) == 4 and result.output_tokens == 4


async def test_vllm_shaped_compact_events(fake_server) -> None:
    app, base = fake_server
    app.mode = "compact"
    result = await _send(base)
    assert result.success, result.error
    assert len(result.chunk_times) == 4 and result.chunk_times == sorted(result.chunk_times)
    assert result.usage_reported and (result.prompt_tokens, result.output_tokens) == (42, 4)
    assert result.finish_reason == "length"


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


def test_sse_parser_crlf_split_between_reads() -> None:
    parser = SseParser()
    assert parser.feed(b'data: {"a": 1}\r') == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\ndata: [DONE]\r\n\r\n") == [b'{"a": 1}', b"[DONE]"]


def test_sse_parser_multiline_data_and_other_fields() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\nid: 7\ndata: {\"a\":\ndata:1}\n\n: ping\n\nretry: 5\n\n") == [b'{"a":\n1}']


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}}', "malformed_sse"),  # extra brace
        (b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]} {"a":1}', "malformed_sse"),
        (b'{"choices":[{"index":0,"delta":{"content":"\xff"},"finish_reason":null}]}', "malformed_sse"),  # not UTF-8
        (b'[{"choices":[{"index":0}]}]', "malformed_sse"),  # JSON, but not an object
        (b'{"error":"overloaded","choices":[]}', "server_error"),
    ],
)
def test_bad_events_are_failures_even_when_shaped_like_tokens(payload: bytes, kind: str) -> None:
    result = RequestResult(index=0)
    assert _apply_event(payload, result, 1.0, result.chunk_times) is False
    assert result.error_kind == kind and not result.chunk_times


def test_event_with_whitespace_around_json_is_still_read() -> None:
    result = RequestResult(index=0)
    _apply_event(b' {"choices": [{"index": 0, "delta": {}}]} ', result, 1.0, result.chunk_times)
    assert result.error_kind is None and result.chunk_times == [1.0]
    assert _apply_event(b" [DONE] ", result, 2.0, result.chunk_times) is True


# -- the fast paths agree with the plain reading of the SSE spec and JSON, on any stream cut at any points ----------

_TEXT = st.text(alphabet=st.sampled_from(['a', ' ', '"', "\\", "\n", "\u00e9", "\u4e2d", "{", "}", ":", ","]),
                max_size=6)
_TOKEN = st.builds(lambda text, reason: {"choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                                                       "finish_reason": reason}]},
                   _TEXT, st.sampled_from([None, None, None, "length", "stop"]))
_USAGE = st.builds(lambda p, c: {"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}},
                   st.integers(0, 99), st.integers(0, 99))
_ERROR = st.builds(lambda m: {"error": {"message": m}}, _TEXT)


@st.composite
def _event_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["token"] * 6 + ["usage", "error", "done", "comment", "broken", "multiline"]))
    compact = draw(st.booleans())
    dump = (lambda o: json.dumps(o, separators=(",", ":"))) if compact else json.dumps
    if kind == "done":
        return b"data: [DONE]\n\n"
    if kind == "comment":
        return b": keep-alive\n\n"
    body = dump(draw({"token": _TOKEN, "usage": _USAGE, "error": _ERROR, "broken": _TOKEN,
                      "multiline": _TOKEN}[kind])).encode()
    if kind == "broken":
        body = body[: draw(st.integers(1, len(body) - 1))]
    if kind == "multiline":
        cut = draw(st.integers(1, len(body) - 1))
        return b"data: " + body[:cut] + b"\ndata:" + body[cut:] + b"\n\n"
    return b"data: " + body + b"\n\n"


def _reference(stream: bytes) -> tuple:
    """The straightforward reading: split into events, join data lines, json.loads every payload."""
    blocks = stream.replace(b"\r\n", b"\n").split(b"\n\n")
    blocks[-1] = blocks[-1].strip()
    tokens, usage, reason, done = 0, (None, None), None, False
    for block in blocks:
        lines = [ln[5:].removeprefix(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if not lines or done:
            continue
        payload = b"\n".join(lines)
        if payload.strip() == b"[DONE]":
            done = True
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            return ("malformed_sse", tokens)
        if not isinstance(event, dict):
            return ("malformed_sse", tokens)
        if "error" in event and not event.get("choices"):
            return ("server_error", tokens)
        if event.get("choices"):
            tokens += 1
            reason = event["choices"][0].get("finish_reason") or reason
        if isinstance(event.get("usage"), dict):
            usage = (event["usage"].get("prompt_tokens"), event["usage"].get("completion_tokens"))
    if not tokens:
        return ("no_tokens", 0)
    if not done:
        return ("truncated", tokens)
    return (None, tokens, usage, reason)


class _FakeContent:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def iter_any(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


class _FakeResponse:
    def __init__(self, parts: list[bytes]) -> None:
        self.content = _FakeContent(parts)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_event_bytes(), max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=8),
       crlf=st.booleans(), final_blank=st.booleans())
def test_client_reads_any_stream_like_the_reference(events: list[bytes], cuts: list[int], crlf: bool,
                                                     final_blank: bool) -> None:
    stream = b"".join(events)
    if not final_blank:
        stream = stream.removesuffix(b"\n\n")
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parts = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]
    clock = itertools.count(1.0)
    result = RequestResult(index=0)
    asyncio.run(ChatClient._read_stream(_FakeResponse(parts), result, lambda: next(clock)))  # type: ignore[arg-type]
    expected = _reference(stream)
    assert result.error_kind == expected[0], (stream, result.error)
    assert len(result.chunk_times) == expected[1]
    if expected[0] is None:
        assert result.success
        prompt, completion = expected[2]
        assert result.prompt_tokens == prompt
        assert result.output_tokens == (completion if completion is not None else expected[1])
        assert result.finish_reason == expected[3]


def test_paused_gc_restores_the_collector() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        with paused_gc():  # nested: the inner block must not re-enable it
            pass
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()  # a heap frozen by someone else stays frozen
    try:
        frozen = gc.get_freeze_count()
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


def test_record_round_trip_is_relative_to_origin() -> None:
    r = RequestResult(index=1, send_time=10.0, first_token_time=10.5, chunk_times=[10.5, 10.7], end_time=10.7,
                      success=True, output_tokens=2)
    record = r.to_record(origin=10.0)
    assert record["send_time"] == 0.0 and record["chunk_times"] == [0.5, 0.7]
    assert RequestResult.from_record(record).output_tokens == 2
