"""Streaming client for an OpenAI-compatible `/v1/chat/completions` endpoint (asyncio + aiohttp).

Timing semantics follow `vllm bench serve` so numbers compare key by key (docs/benchmark.md, "How the client
compares with `vllm bench serve`"; upstream: `vllm/benchmarks/lib/endpoint_request_func.py`): TTFT is taken at the
first SSE event whose `choices` is non-empty; E2EL ends at the last token event (the trailing usage event does not
move it); prompt and output token counts come from the server's `usage`, which includes image tokens. Unlike vLLM's
client, a stream that ends without `[DONE]`, carries malformed JSON, stalls or is reset is a *failed* request with a
reason, never a silent success, and every request has a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from .workload import RequestSpec

# Env vars consulted for an API key of an external endpoint. The key is sent as a header only: never recorded.
API_KEY_ENV_VARS = ("VLMOPT_API_KEY", "OPENAI_API_KEY")


@dataclass
class RequestResult:
    """What happened to one request. Times are `time.perf_counter()` seconds (monotonic, shared by processes)."""

    index: int
    send_time: float = 0.0
    first_token_time: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # every token-carrying event, the first included
    end_time: float | None = None  # last token event
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    usage_reported: bool = False
    num_images: int = 0
    image_sizes: list[str] = field(default_factory=list)
    success: bool = False
    error: str | None = None
    error_kind: str | None = None
    finish_reason: str | None = None
    queue_time: float = 0.0  # waited for the client's concurrency limit before sending

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.send_time

    @property
    def latency(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.send_time

    @property
    def itl(self) -> list[float]:
        times = self.chunk_times
        return [b - a for a, b in itertools.pairwise(times)]

    def fail(self, kind: str, message: str) -> RequestResult:
        self.success = False
        self.error_kind = kind
        self.error = message[:500]
        return self

    def to_record(self, origin: float) -> dict[str, Any]:
        """JSON-friendly, times relative to `origin` (the point's start) in seconds."""
        record = asdict(self)
        for key in ("send_time", "first_token_time", "end_time"):
            if record[key] is not None:
                record[key] = round(record[key] - origin, 6)
        record["chunk_times"] = [round(t - origin, 6) for t in self.chunk_times]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RequestResult:
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})


class SseParser:
    """Incremental Server-Sent Events parser: bytes in, complete `data` payloads out (comments and other fields
    dropped). Tolerates CRLF line ends (also split across reads) and payloads split across network reads.

    It runs once per network read of every stream, so the common case (an event that is one `data: ` line) costs
    two `find`s and one slice; anything else takes the general path."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            # Whole buffer, not just `data`: a CRLF split across two reads leaves its CR at the buffer's end.
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.find(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        payloads = []
        start = 0
        while end >= 0:
            if buffer.startswith(b"data: ", start) and buffer.find(b"\n", start, end) < 0:
                payloads.append(buffer[start + 6 : end])
            else:
                payload = self._payload(buffer[start:end])
                if payload is not None:
                    payloads.append(payload)
            start = end + 2
            end = buffer.find(b"\n\n", start)
        self._buffer = buffer[start:]
        return payloads

    def flush(self) -> list[bytes]:
        """At end of stream: the last event, if the server left out its final blank line."""
        rest, self._buffer = self._buffer.strip(), b""
        payload = self._payload(rest) if rest else None
        return [payload] if payload is not None else []

    @staticmethod
    def _payload(event: bytes) -> bytes | None:
        lines = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        return b"\n".join(lines) if lines else None


class ChatClient:
    """One aiohttp session for a whole benchmark point; `send()` is safe to call from many tasks at once."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float = 600.0,
        stall_timeout_s: float | None = None,
        ignore_eos: bool = True,
        temperature: float | None = 0.0,
        extra_body: dict[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=stall_timeout_s)
        self.ignore_eos = ignore_eos
        self.temperature = temperature
        self.extra_body = dict(extra_body or {})
        key = api_key or next((os.environ[v] for v in API_KEY_ENV_VARS if os.environ.get(v)), None)
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatClient:
        # limit=0: the load generator, not the connection pool, decides how many requests are in flight.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def payload(self, spec: RequestSpec) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": spec.prompt}]
        content += [{"type": "image_url", "image_url": {"url": url}} for url in spec.images]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_completion_tokens": spec.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.ignore_eos:
            # vLLM extension: generate exactly max_tokens so every variant does the same amount of work. With
            # ignore_eos neither EOS nor the generation config's stop ids end a request early (vLLM 0.32
            # SamplingParams.update_from_generation_config), so min_tokens would add nothing but vLLM's
            # MinTokensLogitsProcessor, an extra per-step pass that `vllm bench serve` does not trigger either.
            body["ignore_eos"] = True
        body.update(self.extra_body)
        return body

    async def send(self, spec: RequestSpec) -> RequestResult:
        if self._session is None:
            raise RuntimeError("use `async with ChatClient(...)`")
        result = RequestResult(index=spec.index, num_images=spec.num_images, image_sizes=list(spec.image_sizes))
        body = json.dumps(self.payload(spec)).encode()
        perf = time.perf_counter
        result.send_time = perf()
        try:
            async with self._session.post(
                self.url, data=body, headers=self._headers, timeout=self.timeout
            ) as response:
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:300].strip()
                    return result.fail(f"http_{response.status}", f"HTTP {response.status} {response.reason}: {text}")
                await self._read_stream(response, result, perf)
        except aiohttp.ServerTimeoutError as exc:  # sock_read: no bytes for stall_timeout_s
            return result.fail("stall", f"stream stalled: {exc or 'no data within the read timeout'}")
        except (asyncio.TimeoutError, TimeoutError):
            return result.fail("timeout", f"no complete response within {self.timeout.total:g} s")
        except aiohttp.ClientPayloadError as exc:
            return result.fail("connection", f"response body broken off: {exc}")
        except aiohttp.ClientError as exc:
            return result.fail("connection", f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return result.fail("connection", f"{type(exc).__name__}: {exc}")
        return result

    @staticmethod
    async def _read_stream(response: aiohttp.ClientResponse, result: RequestResult, perf: Any) -> None:
        parser = SseParser()
        done = False
        chunk_times = result.chunk_times
        async for data in response.content.iter_any():
            now = perf()
            for payload in parser.feed(data):
                if done:
                    continue
                done = _apply_event(payload, result, now, chunk_times)
                if result.error_kind:
                    return
        for payload in parser.flush():
            if not done:
                done = _apply_event(payload, result, perf(), chunk_times)
                if result.error_kind:
                    return
        if not chunk_times:
            result.fail("no_tokens", "stream ended without any token (no event with non-empty choices)")
        elif not done:
            result.fail("truncated", f"stream ended without [DONE] after {len(chunk_times)} token events")
        else:
            result.success = True
            if result.output_tokens is None:
                result.output_tokens = len(chunk_times)  # no usage: one token per event is the best guess


# `raw_decode` on a str is the C scanner behind one Python frame: about half the cost of `json.loads(bytes)`, which
# first sniffs the encoding and strips whitespace with regexes. Anything it does not take whole (leading or trailing
# whitespace, a non-object) goes through `json.loads`, so what counts as valid JSON is unchanged.
_raw_decode = json.JSONDecoder().raw_decode


def _decode_event(payload: bytes) -> Any:
    if payload.startswith(b"{"):
        try:
            text = payload.decode()
            event, end = _raw_decode(text)
            if end == len(text):
                return event
        except ValueError:  # UnicodeDecodeError included
            pass
    return json.loads(payload)


def _apply_event(payload: bytes, result: RequestResult, now: float, chunk_times: list[float]) -> bool:
    """Fold one SSE payload into `result`; True once `[DONE]` arrives. Sets result.error_* on a bad event."""
    if payload == b"[DONE]" or (not payload.startswith(b"{") and payload.strip() == b"[DONE]"):
        return True
    try:
        event = _decode_event(payload)
    except ValueError:
        result.fail("malformed_sse", f"event is not JSON: {payload[:80]!r}")
        return False
    if not isinstance(event, dict):
        result.fail("malformed_sse", f"event is not a JSON object: {payload[:80]!r}")
        return False
    choices = event.get("choices")
    if "error" in event and not choices:
        err = event["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        result.fail("server_error", f"server error in stream: {message}")
        return False
    if choices:
        if result.first_token_time is None:
            result.first_token_time = now
        chunk_times.append(now)
        result.end_time = now
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        if reason:
            result.finish_reason = reason
    usage = event.get("usage")
    if isinstance(usage, dict):
        result.usage_reported = True
        if usage.get("prompt_tokens") is not None:
            result.prompt_tokens = int(usage["prompt_tokens"])
        if usage.get("completion_tokens") is not None:
            result.output_tokens = int(usage["completion_tokens"])
    return False
