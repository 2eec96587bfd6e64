"""/metrics parsing with vLLM 0.32's names and the old (pre-#18354) ones; derived hit rates and gauges."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from vlmopt.bench.scrape import WANTED_NAMES, MetricsScraper, Snapshot, parse_exposition, summarize

NEW_BEFORE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0
vllm:num_preemptions_total{engine="0",model_name="tiny"} 1.0
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 10.0
vllm:mm_cache_queries_total{engine="0",model_name="tiny"} 4.0
vllm:mm_cache_hits_total{engine="0",model_name="tiny"} 0.0
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 50.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 3.0
"""
NEW_DURING = [
    'vllm:num_requests_running{engine="0",model_name="tiny"} 4.0\nvllm:num_requests_waiting{model_name="tiny"} 2\n'
    'vllm:kv_cache_usage_perc{model_name="tiny"} 0.5\n',
    'vllm:num_requests_running{engine="0",model_name="tiny"} 2.0\nvllm:kv_cache_usage_perc{model_name="tiny"} 0.3\n',
]
NEW_AFTER = NEW_BEFORE.replace("num_preemptions_total{engine=\"0\",model_name=\"tiny\"} 1.0",
                               "num_preemptions_total{engine=\"0\",model_name=\"tiny\"} 3.0") \
    .replace('prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0',
             'prefix_cache_queries_total{engine="0",model_name="tiny"} 300.0') \
    .replace('prefix_cache_hits_total{engine="0",model_name="tiny"} 10.0',
             'prefix_cache_hits_total{engine="0",model_name="tiny"} 60.0') \
    .replace('mm_cache_queries_total{engine="0",model_name="tiny"} 4.0',
             'mm_cache_queries_total{engine="0",model_name="tiny"} 24.0') \
    .replace('mm_cache_hits_total{engine="0",model_name="tiny"} 0.0',
             'mm_cache_hits_total{engine="0",model_name="tiny"} 15.0')

# vLLM before the renames: gpu_* names, and counters exposed without the _total suffix.
OLD_BEFORE = """\
vllm:gpu_cache_usage_perc{model_name="tiny"} 0.1
vllm:gpu_prefix_cache_queries{model_name="tiny"} 10
vllm:gpu_prefix_cache_hits{model_name="tiny"} 0
vllm:num_preemptions{model_name="tiny"} 0
"""
OLD_AFTER = """\
vllm:gpu_cache_usage_perc{model_name="tiny"} 0.9
vllm:gpu_prefix_cache_queries{model_name="tiny"} 30
vllm:gpu_prefix_cache_hits{model_name="tiny"} 5
vllm:num_preemptions{model_name="tiny"} 2
"""


def test_parse_exposition_labels_comments_and_specials() -> None:
    text = '# comment\nm{a="x\\"y",b="2"} 1.5 1700000000\nn +Inf\nbad line\no NaN\n'
    parsed = parse_exposition(text)
    assert parsed["m"] == [({"a": 'x"y', "b": "2"}, 1.5)]
    assert parsed["n"][0][1] == float("inf")
    assert "bad" not in parsed


def test_new_names_hit_rates_and_gauges() -> None:
    before = Snapshot.from_text(NEW_BEFORE, at=0)
    during = [Snapshot.from_text(t, at=i + 1) for i, t in enumerate(NEW_DURING)]
    after = Snapshot.from_text(NEW_AFTER, at=3)
    stats = summarize(before, after, during)
    assert stats.mm_cache_hit_rate == pytest.approx(15 / 20)
    assert stats.prefix_cache_hit_rate == pytest.approx(50 / 200)
    assert stats.num_preemptions == 2
    assert stats.max_kv_cache_usage_perc == 0.5
    assert stats.mean_kv_cache_usage_perc == pytest.approx((0.5 + 0.3 + 0.0) / 3)
    assert stats.max_num_requests_running == 4 and stats.max_num_requests_waiting == 2
    assert stats.metrics_samples == 2


def test_old_names_are_accepted() -> None:
    stats = summarize(Snapshot.from_text(OLD_BEFORE), Snapshot.from_text(OLD_AFTER), [])
    assert stats.prefix_cache_hit_rate == pytest.approx(5 / 20)
    assert stats.num_preemptions == 2
    assert stats.max_kv_cache_usage_perc == 0.9
    assert stats.mm_cache_hit_rate is None  # that vLLM had no mm cache counters: unknown, not zero


def test_other_model_is_filtered_out() -> None:
    text = 'vllm:num_requests_running{model_name="a"} 3\nvllm:num_requests_running{model_name="b"} 5\n'
    assert Snapshot.from_text(text, model_name="a").get("running") == 3
    assert Snapshot.from_text(text).get("running") == 8


def test_no_metrics_endpoint_gives_none() -> None:
    stats = summarize(None, None, [])
    assert stats.mm_cache_hit_rate is None and stats.max_kv_cache_usage_perc is None


def test_name_filter_keeps_exactly_the_wanted_series() -> None:
    text = NEW_AFTER + 'vllm:kv_cache_usage_perc_other{model_name="tiny"} 7\nvllm:prompt_tokens_total 9\n'
    everything = parse_exposition(text)
    wanted = parse_exposition(text, WANTED_NAMES)
    assert set(wanted) == set(everything) & WANTED_NAMES
    assert "vllm:time_to_first_token_seconds_bucket" in everything and "vllm:kv_cache_usage_perc_other" in everything
    assert all(wanted[name] == everything[name] for name in wanted)  # same samples, labels or not


class _MetricsServer:
    """A /metrics endpoint that counts its scrapes."""

    def __init__(self) -> None:
        self.scrapes = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=NEW_DURING[0])


async def _sample_for(interval_s: float, run_s: float) -> tuple[int, int]:
    server = _MetricsServer()
    app = web.Application()
    app.router.add_get("/metrics", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    scraper = MetricsScraper(f"http://127.0.0.1:{port}", "tiny", interval_s)
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            task = asyncio.ensure_future(scraper.sample_during(session, stop))
            await asyncio.sleep(run_s)
            stop.set()
            await asyncio.wait_for(task, timeout=5)
    finally:
        await runner.cleanup()
    return server.scrapes, len(scraper.samples)


def test_sampling_waits_one_interval_and_zero_disables_it() -> None:
    # The caller scrapes `before` itself: a sampler stopped within its first interval must not scrape at all.
    assert asyncio.run(_sample_for(interval_s=5.0, run_s=0.2)) == (0, 0)
    assert asyncio.run(_sample_for(interval_s=0.0, run_s=0.2)) == (0, 0)
    scrapes, samples = asyncio.run(_sample_for(interval_s=0.1, run_s=0.55))
    assert 2 <= scrapes <= 6 and samples == scrapes
    assert Snapshot.from_text(NEW_DURING[0]).get("kv_usage") == 0.5
