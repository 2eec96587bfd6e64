"""Drives one load point: releases requests per the arrival schedule, collects results, watches the server.

The point's duration runs from the first dispatch to the end of the last request, as in `vllm bench serve`. If the
liveness check fails (server died) the point stops at once: requests still in flight are cancelled and counted in
`in_flight_at_abort`, completed ones are kept. Ctrl-C (task cancellation) is turned into `PointInterrupted` carrying
what was measured so far, so the caller can save it before exiting.

The garbage collector is paused for the point (`paused_gc`): a collection stops the event loop for up to ~10 ms
with hundreds of streams open (measured with gc.callbacks, docs/benchmark.md "The client's own ceiling"), which
would land in the TTFT/ITL tails as if the server had been slow.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from .arrivals import LoadSpec, arrival_offsets
from .client import ChatClient, RequestResult
from .workload import RequestSpec

SpecSource = Callable[[int], RequestSpec]


@dataclass
class PointRun:
    load: LoadSpec
    results: list[RequestResult] = field(default_factory=list)
    started: float = 0.0  # perf_counter of the first dispatch
    ended: float = 0.0
    aborted: str | None = None
    in_flight_at_abort: int = 0

    @property
    def duration(self) -> float:
        # vLLM: first dispatch until every request has finished; an aborted point ends when it was stopped.
        return max(self.ended - self.started, 0.0)


class PointAborted(Exception):
    """The server died (or another fatal condition) mid-point; `.run` holds the completed requests."""

    def __init__(self, reason: str, run: PointRun, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.run = run
        self.cause = cause


class PointInterrupted(Exception):
    """The user pressed Ctrl-C mid-point; `.run` holds the completed requests."""

    def __init__(self, run: PointRun) -> None:
        super().__init__("interrupted by the user (Ctrl-C)")
        self.run = run


@contextmanager
def paused_gc() -> Iterator[None]:
    """No automatic garbage collection inside the block; the heap that existed before it is frozen (left out of
    later collections, as `vllm bench serve` does with `freeze_gc_heap`), and collection resumes afterwards.

    Safe for memory: a successful request creates no reference cycles (after 256 streams x 100 events with the
    collector off, `gc.collect()` found 0 unreachable objects), so it is freed by reference counting; whatever a
    failed request leaves in cycles is collected after the point. Nested use is harmless, and a heap someone else
    froze before stays frozen: only what this block changed is undone."""
    was_enabled = gc.isenabled()
    froze = was_enabled and gc.get_freeze_count() == 0
    if was_enabled:
        gc.collect()
        if froze:
            gc.freeze()
        gc.disable()
    try:
        yield
    finally:
        if froze:
            gc.unfreeze()
        if was_enabled:
            gc.enable()


async def run_point(
    client: ChatClient,
    spec_for: SpecSource,
    load: LoadSpec,
    *,
    num_prompts: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    liveness: Callable[[], None] | None = None,
    liveness_interval_s: float = 1.0,
    on_result: Callable[[RequestResult], None] | None = None,
    pause_gc: bool = True,
) -> PointRun:
    """Run one point until `num_prompts` requests are done or `duration_s` has passed (whichever is given).
    `on_result` runs once per finished request (never per token event), so keep it cheap."""
    if not num_prompts and not duration_s:
        raise ValueError("give num_prompts or duration_s")
    with paused_gc() if pause_gc else nullcontext():
        return await _run_point(client, spec_for, load, num_prompts, duration_s, seed, liveness,
                                liveness_interval_s, on_result)


async def _run_point(
    client: ChatClient,
    spec_for: SpecSource,
    load: LoadSpec,
    num_prompts: int | None,
    duration_s: float | None,
    seed: int,
    liveness: Callable[[], None] | None,
    liveness_interval_s: float,
    on_result: Callable[[RequestResult], None] | None,
) -> PointRun:
    run = PointRun(load=load)
    tasks: set[asyncio.Task[None]] = set()
    fatal: list[BaseException] = []
    deadline: float | None = None

    async def one(index: int, arrived: float, gate: asyncio.Semaphore | None) -> None:
        spec = spec_for(index)
        if gate is not None:
            async with gate:
                result = await _send(spec, arrived)
        else:
            result = await _send(spec, arrived)
        run.results.append(result)
        if on_result is not None:
            on_result(result)

    async def _send(spec: RequestSpec, arrived: float) -> RequestResult:
        result = await client.send(spec)
        result.queue_time = max(result.send_time - arrived, 0.0)
        return result

    async def closed_loop_worker(counter: list[int]) -> None:
        while True:
            index = counter[0]
            if num_prompts is not None and index >= num_prompts:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            counter[0] += 1
            await one(index, time.perf_counter(), None)

    async def dispatch() -> None:
        nonlocal deadline
        run.started = time.perf_counter()
        deadline = run.started + duration_s if duration_s else None
        if load.kind == "concurrency":
            counter = [0]
            workers = [asyncio.ensure_future(closed_loop_worker(counter)) for _ in range(load.max_concurrency or 1)]
            tasks.update(workers)
            await asyncio.gather(*workers)
            return
        count = num_prompts if num_prompts else max(int((load.rate or 1.0) * (duration_s or 0)) + 1, 1)
        gate = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
        for index, offset in enumerate(arrival_offsets(count, load, seed)):
            wait = run.started + offset - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if deadline is not None and time.perf_counter() >= deadline:
                break
            task = asyncio.ensure_future(one(index, time.perf_counter(), gate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))

    async def watchdog(main: asyncio.Task[None]) -> None:
        while not main.done():
            await asyncio.sleep(liveness_interval_s)
            try:
                liveness()  # type: ignore[misc]
            except Exception as exc:
                fatal.append(exc)
                main.cancel()
                return

    main = asyncio.ensure_future(dispatch())
    guard = asyncio.ensure_future(watchdog(main)) if liveness is not None else None
    try:
        await main
    except asyncio.CancelledError:
        pending = [t for t in tasks if not t.done()]
        run.in_flight_at_abort = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        run.ended = time.perf_counter()
        if fatal:
            run.aborted = str(fatal[0])
            raise PointAborted(str(fatal[0]), run, fatal[0]) from None
        run.aborted = "interrupted by the user (Ctrl-C)"
        raise PointInterrupted(run) from None
    finally:
        if guard is not None:
            guard.cancel()
    run.ended = time.perf_counter()
    return run
