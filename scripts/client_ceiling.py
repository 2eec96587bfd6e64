#!/usr/bin/env python
"""The benchmark client's own ceiling, next to `vllm bench serve`'s client, in the same run.

A zero-work streaming server on loopback (its own process) answers every chat request with N SSE token events
(in the paced phase each stream starts at a random phase within the interval), each stamped with the server's
`time.perf_counter()` at the moment of writing (CLOCK_MONOTONIC, shared by processes on Linux).
Each client, in its own process, opens S concurrent streams. Per token event:
added latency = time the client recorded the event - time the server wrote it. Two phases per S:
  paced:    events every --interval-ms per stream (like a decoding server): added latency p50/p99;
  unpaced:  events as fast as the server writes them: chunks/s the client handles.
vLLM's client is `vllm.benchmarks.lib.endpoint_request_func.async_request_openai_chat_completions` with the session
settings of `vllm bench serve` (run with the serve env's python); event receive times are rebuilt from its
start_time + ttft + cumsum(itl), the way vLLM does for its own peak-throughput figure.

    .venv/bin/python scripts/client_ceiling.py                       # 256 and 1024 streams, both clients
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# -- zero-work server ---------------------------------------------------------------------------------------------


def serve(port_file: Path) -> None:
    from aiohttp import web

    sent: dict[str, list[float]] = {}
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%d}}\n\ndata: [DONE]\n\n'

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        parts = body["messages"][0]["content"]
        key = parts if isinstance(parts, str) else next(p["text"] for p in parts if p.get("type") == "text")
        count = int(body.get("max_completion_tokens") or body.get("max_tokens"))
        interval = float(body.get("vlmopt_interval_s", 0.0))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        stamps = sent.setdefault(key, [])
        if interval:
            # Random phase per stream: events arrive spread over the interval instead of in one synchronized burst,
            # so the figure is the client's per-event cost, not the time to drain an S-event burst.
            await asyncio.sleep(random.uniform(0, interval))
        for _ in range(count):
            now = time.perf_counter()
            stamps.append(now)
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n')
            if interval:
                await asyncio.sleep(interval)
        await resp.write(usage % count)
        return resp

    async def stamps(request: web.Request) -> web.Response:
        data = dict(sent)
        sent.clear()
        return web.json_response(data)

    app = web.Application(client_max_size=2**24)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stamps", stamps)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port_file.write_text(str(site._server.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- clients (each returns {key: [receive times]}) --------------------------------------------------------------


async def vlmopt_client(url: str, streams: int, tokens: int, interval_s: float) -> dict[str, list[float]]:
    sys.path.insert(0, str(REPO))
    from vlmopt.bench.client import ChatClient
    from vlmopt.bench.workload import RequestSpec

    async with ChatClient(url, "zero", ignore_eos=False, temperature=None,
                          extra_body={"vlmopt_interval_s": interval_s}) as client:
        specs = [RequestSpec(index=i, prompt=f"s{i}", max_tokens=tokens) for i in range(streams)]
        results = await asyncio.gather(*(client.send(s) for s in specs))
    bad = [r.error for r in results if not r.success]
    if bad:
        raise SystemExit(f"vlmopt client: {len(bad)} failed, e.g. {bad[0]}")
    return {f"s{r.index}": r.chunk_times for r in results}


async def vllm_client(url: str, streams: int, tokens: int, interval_s: float) -> dict[str, list[float]]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_chat_completions

    connector = aiohttp.TCPConnector(limit=streams, limit_per_host=streams, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 3600)) as session:
        inputs = [RequestFuncInput(prompt=f"s{i}", api_url=url + "/v1/chat/completions", prompt_len=1,
                                   output_len=tokens, model="zero", extra_body={"vlmopt_interval_s": interval_s})
                  for i in range(streams)]
        outputs = await asyncio.gather(*(async_request_openai_chat_completions(x, session) for x in inputs))
    bad = [o.error for o in outputs if not o.success]
    if bad:
        raise SystemExit(f"vllm client: {len(bad)} failed, e.g. {bad[0][-300:]}")
    received = {}
    for i, out in enumerate(outputs):
        times = [out.start_time + out.ttft]
        for gap in out.itl:
            times.append(times[-1] + gap)
        received[f"s{i}"] = times
    return received


def run_client(kind: str, url: str, streams: int, tokens: int, interval_s: float) -> None:
    func = vlmopt_client if kind == "vlmopt" else vllm_client
    started = time.perf_counter()
    received = asyncio.run(func(url, streams, tokens, interval_s))
    print(json.dumps({"started": started, "received": received}))


# -- orchestration ------------------------------------------------------------------------------------------------


def measure(python: str, kind: str, url: str, streams: int, tokens: int, interval_s: float) -> dict:
    import urllib.request

    proc = subprocess.run([python, __file__, "--role", "client", "--client", kind, "--url", url, "--streams",
                           str(streams), "--tokens", str(tokens), "--interval-s", str(interval_s)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} client failed:\n{proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    with urllib.request.urlopen(url + "/stamps", timeout=30) as resp:
        sent = json.loads(resp.read())
    # Steady state: events written after every stream has its first event, so the connection burst at the start
    # (all S requests sent at once) is reported separately from the per-event cost.
    steady_from = max(sent[key][0] for key in data["received"])
    added, steady, last, first = [], [], 0.0, float("inf")
    for key, times in data["received"].items():
        stamps = sent[key]
        if len(stamps) != len(times):
            raise SystemExit(f"{kind}: stream {key} got {len(times)} of {len(stamps)} events")
        for received, stamp in zip(times, stamps, strict=True):
            added.append((received - stamp) * 1000.0)
            if stamp > steady_from:
                steady.append(added[-1])
        last, first = max(last, times[-1]), min(first, stamps[0])
    added.sort()
    steady = sorted(steady) if steady else added
    wall = last - first  # first event written -> last event received: client start-up is not counted
    return {
        "client": kind, "streams": streams, "chunks": len(added), "wall_s": wall,
        "chunks_per_s": len(added) / wall, "added_p50_ms": statistics.median(added),
        "added_p99_ms": _p(added, 0.99), "added_max_ms": added[-1],
        "steady_events": len(steady), "steady_p50_ms": _p(steady, 0.5), "steady_p99_ms": _p(steady, 0.99),
    }


def _p(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def orchestrate(a: argparse.Namespace) -> int:
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from vlmopt.bench.server import resolve_serve_python

    main_python, serve_python = sys.executable, str(resolve_serve_python())
    port_file = Path(tempfile.mkdtemp(prefix="vlmopt-ceiling-")) / "port"
    server = subprocess.Popen([main_python, __file__, "--role", "server", "--port-file", str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("zero-work server did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        rows = []
        for streams in a.streams:
            for phase, interval, tokens in (("paced", a.interval_ms / 1000.0, a.paced_tokens),
                                            ("unpaced", 0.0, a.unpaced_tokens)):
                for _ in range(a.repeats):
                    for kind, python in (("vlmopt", main_python), ("vllm", serve_python)):
                        rows.append({"phase": phase, **measure(python, kind, url, streams, tokens, interval)})
    finally:
        server.terminate()
        server.wait(10)
    table = Table(title=f"client ceiling on loopback (zero-work server; paced = one event per {a.interval_ms:g} ms "
                  "per stream); median of repeats")
    for col in ("streams", "client", "paced chunks/s", "added p50 ms", "added p99 ms", "steady p50 ms",
                "steady p99 ms", "unpaced chunks/s"):
        table.add_column(col, justify="right")
    summary = []
    for streams in a.streams:
        for kind in ("vlmopt", "vllm"):
            def pick(phase: str, key: str, streams: int = streams, kind: str = kind) -> float:
                return statistics.median(r[key] for r in rows if (r["phase"], r["streams"], r["client"]) ==
                                         (phase, streams, kind))
            row = {"streams": streams, "client": kind, "paced_chunks_per_s": pick("paced", "chunks_per_s"),
                   "added_p50_ms": pick("paced", "added_p50_ms"), "added_p99_ms": pick("paced", "added_p99_ms"),
                   "steady_p50_ms": pick("paced", "steady_p50_ms"), "steady_p99_ms": pick("paced", "steady_p99_ms"),
                   "unpaced_chunks_per_s": pick("unpaced", "chunks_per_s")}
            summary.append(row)
            table.add_row(str(streams), kind, f"{row['paced_chunks_per_s']:.0f}", f"{row['added_p50_ms']:.2f}",
                          f"{row['added_p99_ms']:.2f}", f"{row['steady_p50_ms']:.2f}", f"{row['steady_p99_ms']:.2f}",
                          f"{row['unpaced_chunks_per_s']:.0f}")
    Console().print(table)
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "summary": summary,
                                      "runs": rows}, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("orchestrate", "server", "client"), default="orchestrate")
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024])
    parser.add_argument("--interval-ms", type=float, default=50.0, help="paced phase: gap between events")
    parser.add_argument("--paced-tokens", type=int, default=40)
    parser.add_argument("--unpaced-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--client", choices=("vlmopt", "vllm"))
    parser.add_argument("--url")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--interval-s", type=float, default=0.0)
    a = parser.parse_args()
    if a.role == "server":
        serve(a.port_file)
        return 0
    if a.role == "client":
        run_client(a.client, a.url, a.streams[0], a.tokens, a.interval_s)
        return 0
    return orchestrate(a)


if __name__ == "__main__":
    sys.exit(main())
