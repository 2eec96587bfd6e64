#!/usr/bin/env python
"""The benchmark client's own ceiling, next to `vllm bench serve`'s client, in the same run.

A zero-work streaming server on loopback (its own process) answers every chat request with N SSE token events
shaped like vLLM's (in the paced phase each stream starts at a random phase within the interval), and stamps each
event with `time.perf_counter()` (CLOCK_MONOTONIC, one clock for all processes on Linux) once the write returned,
i.e. once the bytes are in the socket for the client to read. Each client, in its own process, opens S concurrent
streams. Per token event: added latency = time the client recorded the event - time the server stamped it.
Two phases per S:
  paced:    events every --interval-ms per stream (like a decoding server): added latency p50/p99;
  unpaced:  events as fast as the server writes them, --unpaced-burst events per write so the server outruns
            both clients: chunks/s the client handles.
The two clients take turns (ABBA order over repeats), against the same server, with the same schedule.

vlmopt's client runs through `vlmopt.bench.loadgen.run_point` on `vlmopt.bench.event_loop` (the code path and
event loop of `vlmopt benchmark`: uvloop where installed); `vlmopt-asyncio` is the same on plain asyncio. vLLM's client
is `vllm.benchmarks.lib.endpoint_request_func.async_request_openai_chat_completions` with the session settings and
the `freeze_gc_heap()` call of `vllm bench serve` (run with the serve env's python); its event receive times are
rebuilt from start_time + ttft + cumsum(itl), the way vLLM does for its own peak-throughput figure.

With two or more CPUs the zero-work server runs on the last CPU and the clients (and the sleeper below) on the
others (`--no-pin` lets the scheduler place them): a client sharing a core with a server that writes thousands of
events per second measures the server's time slices, not itself.

Per run it also records what bounds the tail on a shared machine: the load average, the client process's CPU time
per event and how often the kernel preempted it (getrusage), the wake-up lateness of an idle sleeper process running
beside it (the floor for any process at that moment), and how many 10 ms windows hold the slowest 1% of events.

    .venv/bin/python scripts/client_ceiling.py --repeats 3 --json ceiling.json     # 256 and 1024 streams
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIENTS = ("vlmopt", "vlmopt-asyncio", "vllm")

# One token event as vLLM's OpenAI server writes it (compact JSON), so both clients parse realistic bytes.
TOKEN_EVENT = (
    b'data: {"id":"chatcmpl-5c1f0e9a2b7d4c3e8f6a1b2c3d4e5f60","object":"chat.completion.chunk",'
    b'"created":1764220800,"model":"zero","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
)
USAGE_AND_DONE = (
    b'data: {"id":"chatcmpl-5c1f0e9a2b7d4c3e8f6a1b2c3d4e5f60","object":"chat.completion.chunk",'
    b'"created":1764220800,"model":"zero","choices":[],"usage":{"prompt_tokens":1,"total_tokens":%d,'
    b'"completion_tokens":%d}}\n\ndata: [DONE]\n\n'
)


def _run_loop(main: object, loop: str) -> object:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


# -- zero-work server ---------------------------------------------------------------------------------------------


def serve(port_file: Path, loop: str) -> None:
    from aiohttp import web

    sent: dict[str, list[float]] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        parts = body["messages"][0]["content"]
        key = parts if isinstance(parts, str) else next(p["text"] for p in parts if p.get("type") == "text")
        count = int(body.get("max_completion_tokens") or body.get("max_tokens"))
        interval = float(body.get("vlmopt_interval_s", 0.0))
        burst = int(body.get("vlmopt_burst", 1))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        stamps = sent.setdefault(key, [])
        if interval:
            # Random phase per stream: events arrive spread over the interval instead of in one synchronized burst,
            # so the figure is the client's per-event cost, not the time to drain an S-event burst.
            await asyncio.sleep(random.uniform(0, interval))
        for first in range(0, count, burst):
            # Stamped once the write returned, i.e. the bytes are in the kernel's socket buffer and the client can
            # read them: everything after this is the client's (and the scheduler's) doing, for either client.
            events = min(burst, count - first)
            await resp.write(TOKEN_EVENT * events)
            stamps.extend([time.perf_counter()] * events)
            if interval:
                await asyncio.sleep(interval)
        await resp.write(USAGE_AND_DONE % (count + 1, count))
        return resp

    async def stamps(request: web.Request) -> web.Response:
        data = dict(sent)
        sent.clear()
        gc.collect()  # between runs: whatever the last run left in cycles (see main below)
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
        # No garbage collection while clients run: a collection pauses the server for milliseconds, after which it
        # writes every event that fell due meanwhile in one burst (25-60 events at 256 paced streams, seen in the
        # per-event delays), and a client must drain such a burst one event after another. That measured the
        # server's pauses, not the client's per-event cost; `/stamps` (between runs) collects instead.
        sys.path.insert(0, str(REPO))
        from vlmopt.bench.loadgen import paused_gc

        with paused_gc():
            await asyncio.Event().wait()

    _run_loop(main(), loop)


# -- clients (each returns {key: [receive times]}) --------------------------------------------------------------


async def vlmopt_client(url: str, streams: int, tokens: int, server_body: dict) -> dict[str, list[float]]:
    sys.path.insert(0, str(REPO))
    from vlmopt.bench.arrivals import LoadSpec
    from vlmopt.bench.client import ChatClient
    from vlmopt.bench.loadgen import run_point
    from vlmopt.bench.workload import RequestSpec

    async with ChatClient(url, "zero", ignore_eos=False, temperature=None,
                          extra_body=server_body) as client:
        run = await run_point(client, lambda i: RequestSpec(index=i, prompt=f"s{i}", max_tokens=tokens),
                              LoadSpec(kind="concurrency", max_concurrency=streams), num_prompts=streams)
    bad = [r.error for r in run.results if not r.success]
    if bad:
        raise SystemExit(f"vlmopt client: {len(bad)} failed, e.g. {bad[0]}")
    return {f"s{r.index}": r.chunk_times for r in run.results}


async def vllm_client(url: str, streams: int, tokens: int, server_body: dict) -> dict[str, list[float]]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_chat_completions
    from vllm.utils.gc_utils import freeze_gc_heap

    freeze_gc_heap()  # as `vllm bench serve` does before its benchmark loop
    connector = aiohttp.TCPConnector(limit=streams, limit_per_host=streams, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 3600)) as session:
        inputs = [RequestFuncInput(prompt=f"s{i}", api_url=url + "/v1/chat/completions", prompt_len=1,
                                   output_len=tokens, model="zero", extra_body=server_body)
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


def run_client(kind: str, url: str, streams: int, tokens: int, interval_s: float, burst: int, out: Path) -> None:
    server_body = {"vlmopt_interval_s": interval_s, "vlmopt_burst": burst}  # how the zero-work server answers
    if kind == "vllm":
        import vllm.benchmarks.lib.endpoint_request_func  # noqa: F401  (imports are start-up, not per-event cost)

        main, run, loop = vllm_client(url, streams, tokens, server_body), asyncio.run, "asyncio"
    else:
        # vlmopt's client on the loop `vlmopt benchmark` uses (vlmopt-asyncio: the parent set VLMOPT_EVENT_LOOP)
        sys.path.insert(0, str(REPO))
        import vlmopt.bench.loadgen  # noqa: F401
        from vlmopt.bench import event_loop

        main, run, loop = vlmopt_client(url, streams, tokens, server_body), event_loop.run, event_loop.loop_choice()
    before = resource.getrusage(resource.RUSAGE_SELF)
    received = run(main)
    after = resource.getrusage(resource.RUSAGE_SELF)
    # A file, not stdout: the result is megabytes, and a pipe an event loop library left non-blocking truncated it
    # once (uvloop run, 256 unpaced streams).
    out.write_text(json.dumps({"received": received, "loop": loop,
                               "cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                               "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw}))


# -- scheduler floor --------------------------------------------------------------------------------------------


def probe(period_s: float = 0.001) -> None:
    """Runs beside each client until SIGTERM: sleeps `period_s` in a loop and records how late it wakes up. This is
    the machine's own wake-up latency at that moment (other jobs, the server, the hypervisor), which no client
    process can beat: if its p99 is above 1 ms, so is every client's."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    late, perf, sleep = [], time.perf_counter, time.sleep
    while not stop:
        started = perf()
        sleep(period_s)
        late.append((perf() - started - period_s) * 1000.0)
    late.sort()
    print(json.dumps({"wakeups": len(late), "late_p50_ms": _p(late, 0.5), "late_p99_ms": _p(late, 0.99),
                      "late_max_ms": late[-1] if late else None}))


# -- orchestration ------------------------------------------------------------------------------------------------


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, client CPUs). Pinned, the zero-work server gets the last CPU and the clients (and the sleeper
    that measures their floor) the others, as when the client runs on its own host or cores: otherwise the fake
    server, busy writing thousands of events per second, takes turns with the client on the same core and its
    time slices land in the client's added latency. Both clients get the same CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def _on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A subprocess preexec_fn that moves the child onto `cpus` (None: leave it where it is)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def measure(python: str, kind: str, url: str, streams: int, tokens: int, interval_s: float, burst: int,
            client_cpus: set[int] | None = None) -> dict:
    import urllib.request

    load_before = os.getloadavg()[0]
    floor = subprocess.Popen([sys.executable, __file__, "--role", "probe"], stdout=subprocess.PIPE, text=True,
                             preexec_fn=_on_cpus(client_cpus))
    result_file = Path(tempfile.mkdtemp(prefix="vlmopt-ceiling-client-")) / "result.json"
    proc = subprocess.run([python, __file__, "--role", "client", "--client", kind, "--url", url, "--streams",
                           str(streams), "--tokens", str(tokens), "--interval-s", str(interval_s), "--burst",
                           str(burst), "--result-file", str(result_file)],
                          capture_output=True, text=True, check=False, preexec_fn=_on_cpus(client_cpus),
                          env=os.environ | ({"VLMOPT_EVENT_LOOP": "asyncio"} if kind == "vlmopt-asyncio" else {}))
    floor.send_signal(signal.SIGTERM)
    floor_stats = json.loads(floor.communicate(timeout=30)[0])
    if proc.returncode != 0:
        raise SystemExit(f"{kind} client failed:\n{proc.stderr[-2000:]}")
    if not result_file.exists():
        raise SystemExit(f"{kind} client exited without writing its result; its stderr:\n{proc.stderr[-2000:]}")
    data = json.loads(result_file.read_text())
    shutil.rmtree(result_file.parent, ignore_errors=True)
    with urllib.request.urlopen(url + "/stamps", timeout=30) as resp:
        sent = json.loads(resp.read())
    # Steady state: events written after every stream has its first event, so the connection burst at the start
    # (all S requests sent at once) is reported separately from the per-event cost.
    steady_from = max(sent[key][0] for key in data["received"])
    added, steady, last, first = [], [], 0.0, float("inf")
    steady_stamped: list[tuple[float, float]] = []
    for key, times in data["received"].items():
        stamps = sent[key]
        if len(stamps) != len(times):
            raise SystemExit(f"{kind}: stream {key} got {len(times)} of {len(stamps)} events")
        for received, stamp in zip(times, stamps, strict=True):
            added.append((received - stamp) * 1000.0)
            if stamp > steady_from:
                steady.append(added[-1])
                steady_stamped.append((stamp, added[-1]))
        last, first = max(last, times[-1]), min(first, stamps[0])
    added.sort()
    steady = sorted(steady) if steady else added
    # Where the tail comes from: if the slowest 1% of steady-state events fall into a handful of 10 ms windows, the
    # client process was paused as a whole (not scheduled), not slow per event.
    cut = _p(steady, 0.99)
    tail_windows = {int(stamp * 100) for stamp, ms in steady_stamped if ms >= cut}
    windows = {int(stamp * 100) for stamp, _ in steady_stamped}
    wall = last - first  # first event written -> last event received: client start-up is not counted
    return {
        "client": kind, "loop": data["loop"], "streams": streams, "chunks": len(added), "wall_s": wall,
        "chunks_per_s": len(added) / wall, "added_p50_ms": statistics.median(added),
        "added_p99_ms": _p(added, 0.99), "added_max_ms": added[-1], "negative_added": sum(x < 0 for x in added),
        "steady_events": len(steady), "steady_p50_ms": _p(steady, 0.5), "steady_p99_ms": cut,
        "steady_tail_windows_10ms": len(tail_windows), "steady_windows_10ms": len(windows),
        # The client process from its first request to its last event (imports left out); includes connecting.
        "client_cpu_s": data["cpu_s"], "client_cpu_us_per_event": data["cpu_s"] / len(added) * 1e6,
        "client_involuntary_switches": data["involuntary_switches"],
        "load_avg_1m": (load_before + os.getloadavg()[0]) / 2,
        "floor_wakeup_p50_ms": floor_stats["late_p50_ms"], "floor_wakeup_p99_ms": floor_stats["late_p99_ms"],
        "floor_wakeup_max_ms": floor_stats["late_max_ms"],
    }


def _run_line(r: dict) -> str:
    return (f"{r['phase']:8s} S={r['streams']:<5d} {r['client']:14s} ({r['loop']}) #{r['repeat']}: "
            f"{r['chunks_per_s']:7.0f} chunks/s, "
            f"added p50 {r['added_p50_ms']:.2f} p99 {r['added_p99_ms']:.2f} ms, steady p99 {r['steady_p99_ms']:.2f} ms "
            f"(tail in {r['steady_tail_windows_10ms']}/{r['steady_windows_10ms']} 10-ms windows), "
            f"{r['client_cpu_us_per_event']:.1f} us CPU/event, preempted {r['client_involuntary_switches']}x, "
            f"load {r['load_avg_1m']:.2f}, idle-sleeper wake-up p99 {r['floor_wakeup_p99_ms']:.2f} ms")


def _p(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def orchestrate(a: argparse.Namespace) -> int:
    from vlmopt.bench.server import resolve_serve_python

    pythons = {"vlmopt": sys.executable, "vlmopt-asyncio": sys.executable, "vllm": str(resolve_serve_python())}
    port_file = Path(tempfile.mkdtemp(prefix="vlmopt-ceiling-")) / "port"
    server_cpus, client_cpus = cpu_split(a.pin)
    print(f"CPUs: server {sorted(server_cpus) if server_cpus else 'any'}, clients and sleeper "
          f"{sorted(client_cpus) if client_cpus else 'any'}", file=sys.stderr, flush=True)
    server = subprocess.Popen([sys.executable, __file__, "--role", "server", "--port-file", str(port_file),
                               "--server-loop", a.server_loop], preexec_fn=_on_cpus(server_cpus))
    rows = []
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("zero-work server did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        phases = {"paced": (a.interval_ms / 1000.0, a.paced_tokens, 1),
                  "unpaced": (0.0, a.unpaced_tokens, a.unpaced_burst)}
        for streams in a.streams:
            for phase in a.phases:
                interval, tokens, burst = phases[phase]
                for repeat in range(a.repeats):
                    # Alternate who goes first (ABBA), so neither client always runs right after the other.
                    for kind in a.clients if repeat % 2 == 0 else a.clients[::-1]:
                        row = {"phase": phase, "repeat": repeat,
                               **measure(pythons[kind], kind, url, streams, tokens, interval, burst, client_cpus)}
                        rows.append(row)
                        print(_run_line(row), file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(10)
    summary = _summarize(rows, a)
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "summary": summary,
                                      "runs": rows}, indent=2))
    return 0


def _summarize(rows: list[dict], a: argparse.Namespace) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"client ceiling on loopback (zero-work server; paced = one event per {a.interval_ms:g} ms "
                  f"per stream); median of {a.repeats} repeats")
    columns = {"streams": "streams", "client": "client", "paced_chunks_per_s": "paced chunks/s",
               "added_p50_ms": "added p50 ms", "added_p99_ms": "added p99 ms", "steady_p99_ms": "steady p99 ms",
               "paced_cpu_us_per_event": "CPU us/event", "paced_preemptions": "preempted",
               "load_avg_1m": "load avg", "floor_wakeup_p99_ms": "sleeper p99 ms",
               "unpaced_chunks_per_s": "unpaced chunks/s"}
    for title in columns.values():
        table.add_column(title, justify="right")
    summary = []
    for streams in a.streams:
        for kind in a.clients:
            def pick(phase: str, key: str, streams: int = streams, kind: str = kind) -> float | None:
                values = [r[key] for r in rows if (r["phase"], r["streams"], r["client"]) == (phase, streams, kind)]
                return statistics.median(values) if values else None

            row = {"streams": streams, "client": kind, "paced_chunks_per_s": pick("paced", "chunks_per_s"),
                   "added_p50_ms": pick("paced", "added_p50_ms"), "added_p99_ms": pick("paced", "added_p99_ms"),
                   "steady_p50_ms": pick("paced", "steady_p50_ms"), "steady_p99_ms": pick("paced", "steady_p99_ms"),
                   "paced_cpu_us_per_event": pick("paced", "client_cpu_us_per_event"),
                   "paced_preemptions": pick("paced", "client_involuntary_switches"),
                   "load_avg_1m": statistics.median(r["load_avg_1m"] for r in rows
                                                    if (r["streams"], r["client"]) == (streams, kind)),
                   "floor_wakeup_p99_ms": pick("paced", "floor_wakeup_p99_ms"),
                   "unpaced_chunks_per_s": pick("unpaced", "chunks_per_s"),
                   "unpaced_cpu_us_per_event": pick("unpaced", "client_cpu_us_per_event")}
            summary.append(row)
            table.add_row(*(_cell(row[key]) for key in columns))
    Console(width=max(Console().width, 150)).print(table)
    return summary


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("orchestrate", "server", "client", "probe"), default="orchestrate")
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024])
    parser.add_argument("--phases", type=lambda s: s.split(","), default=["paced", "unpaced"])
    parser.add_argument("--clients", type=lambda s: s.split(","), default=["vlmopt", "vllm"],
                        help=f"of {', '.join(CLIENTS)}; vlmopt runs on the loop `vlmopt benchmark` uses (uvloop where "
                        "installed), vlmopt-asyncio on plain asyncio, vllm on plain asyncio as vllm bench serve does")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="paced phase: gap between events")
    parser.add_argument("--paced-tokens", type=int, default=60)
    parser.add_argument("--unpaced-tokens", type=int, default=100)
    parser.add_argument("--unpaced-burst", type=int, default=16,
                        help="unpaced phase: events per server write, so that the server outruns both clients")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="server on the last CPU, clients and sleeper on the others (default; --no-pin: any)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--client", choices=CLIENTS)
    parser.add_argument("--url")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--interval-s", type=float, default=0.0)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--result-file", type=Path)
    a = parser.parse_args()
    if a.role == "server":
        serve(a.port_file, a.server_loop)
        return 0
    if a.role == "probe":
        probe()
        return 0
    if a.role == "client":
        run_client(a.client, a.url, a.streams[0], a.tokens, a.interval_s, a.burst, a.result_file)
        return 0
    bad = [x for x in a.phases if x not in ("paced", "unpaced")] + [x for x in a.clients if x not in CLIENTS]
    if bad:
        parser.error(f"unknown phase or client: {', '.join(bad)}")
    if a.server_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("uvloop is not installed in this env (pip install uvloop)")
    return orchestrate(a)


if __name__ == "__main__":
    sys.exit(main())
