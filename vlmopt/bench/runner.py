"""Benchmarks one target end to end: start vLLM with recorded arguments (or use an external endpoint), warm up,
measure image tokens, run the load points (a list or a sweep), write the profile after every point, stop.

Faults: a server that dies mid-point stops the run with its log tail, the completed requests are kept and the
profile is marked incomplete (`BenchmarkFailed`); Ctrl-C saves the same way, then `PointInterrupted` propagates
so the server's context manager stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np

from vlmopt.schemas.common import Provenance, utc_now_iso
from vlmopt.schemas.profile import (
    BenchmarkProfile,
    ClientInfo,
    DeviceInfo,
    EngineInfo,
    LoadPoint,
    ServerArgs,
    WorkloadSpec,
)

from . import event_loop, host_costs, process_cpu
from .arrivals import LoadSpec
from .client import ChatClient, RequestResult
from .gpu_sampler import GpuSampler, GpuStats, energy_per_output_token
from .images import ImagePlanner, warmup_planner
from .loadgen import PointAborted, PointInterrupted, PointRun, run_point
from .metrics import compute_point_metrics, input_token_fields
from .process_cpu import ServerCpu
from .profile_writer import ProfileWriter
from .scrape import MetricsScraper, summarize
from .sweep import Observation, capacity_summary, next_concurrency
from .targets import BenchTarget
from .tokens import select_token_counter
from .workload import PromptSizer, RequestSpec, load_dataset, synthetic_requests

PROBE_MAX_SIZES = 8
PROBE_TEXT_TOKENS = 16

# Set by a campaign job (vlmopt/campaign/command.py) to '<campaign>/<job>'; recorded in the profile.
CAMPAIGN_JOB_ENV = "VLMOPT_CAMPAIGN_JOB"


class BenchmarkFailed(RuntimeError):
    """The run could not finish (server died, endpoint unreachable); the message is for the user."""


class UserCancelled(RuntimeError):
    """Raised by a liveness check when the user asked to stop (Ctrl-C while variants run side by side)."""


def _liveness(check_alive: Callable[[], None] | None, cancel: threading.Event | None) -> Callable[[], None] | None:
    if check_alive is None and cancel is None:
        return None

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise UserCancelled("interrupted by the user (Ctrl-C)")
        if check_alive is not None:
            check_alive()

    return check


@dataclass
class BenchOptions:
    input_tokens: int = 64
    output_tokens: int = 32
    images_per_request: int = 1
    image_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(56, 56)])
    image_reuse: float = 0.0
    image_style: str = "photo"  # images.IMAGE_STYLES
    dataset: Path | None = None
    loads: list[LoadSpec] = field(default_factory=lambda: [LoadSpec("concurrency", max_concurrency=1)])
    sweep: bool = False
    sweep_max_concurrency: int = 64
    slo: dict[str, float] = field(default_factory=dict)
    num_prompts: int | None = 32
    duration_s: float | None = None
    warmup: int = 2
    seed: int = 0
    out_dir: Path = Path("profiles")
    resume: bool = False
    request_timeout_s: float = 300.0
    stall_timeout_s: float | None = None
    ignore_eos: bool = True
    temperature: float | None = 0.0
    max_model_len: int | None = 1024
    max_num_seqs: int | None = None
    extra_server_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 600.0
    # Each /metrics scrape costs vLLM's API server 5-15 ms of CPU on its event loop (measured on a 2-core VM), time the
    # token streams of every request wait for; at 0.25 s that perturbed the measurement there (docs/benchmark.md,
    # "Sampling /metrics"). 1 s keeps the cost near 1% and still gives gauges a few samples per point.
    metrics_interval_s: float = 1.0
    device_name: str | None = None  # override (e.g. for an --endpoint on another machine)
    # Host-side costs for the performance model (bench/host_costs.py): the processor timed in the serve env while the
    # server starts, and text-only vs image requests one at a time. A few seconds; --no-host-costs skips them.
    host_costs: bool = True
    # Size prompts with this tokenizer folder (--tokenizer, a hub id already resolved to the cache) instead of the
    # served model's own (model folder or the server's /tokenize).
    tokenizer: Path | None = None
    tokenizer_label: str | None = None


class Progress(Protocol):
    def variant_started(self, target: BenchTarget, profile_path: Path) -> None: ...
    def message(self, text: str) -> None: ...
    def point_started(self, label: str, total: int | None) -> None: ...
    def request_done(self, result: RequestResult) -> None: ...
    def point_done(self, point: LoadPoint) -> None: ...


class SilentProgress:
    def variant_started(self, target: BenchTarget, profile_path: Path) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def point_started(self, label: str, total: int | None) -> None:
        pass

    def request_done(self, result: RequestResult) -> None:
        pass

    def point_done(self, point: LoadPoint) -> None:
        pass


@dataclass
class Endpoint:
    """Where requests go and how to tell that the server is still alive."""

    base_url: str
    model_name: str
    engine: EngineInfo
    liveness: Callable[[], None] | None = None
    server_log: str | None = None
    server_pid: int | None = None  # the server's process group leader: its processes' CPU time is sampled per point


def _point_seed(seed: int, label: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{label}".encode(), digest_size=4).digest(), "little")


def profile_path_for(opts: BenchOptions, target: BenchTarget, device: DeviceInfo) -> Path:
    return opts.out_dir / target.model / f"{target.variant}@{device.slug()}.json"


def workload_spec(opts: BenchOptions) -> WorkloadSpec:
    return WorkloadSpec(
        input_tokens=None if opts.dataset else opts.input_tokens,
        output_tokens=opts.output_tokens,
        images_per_request=0 if opts.dataset else opts.images_per_request,
        image_sizes=[] if opts.dataset else list(opts.image_sizes),
        image_reuse=opts.image_reuse,
        image_style="photo" if opts.dataset else opts.image_style,
        dataset=str(opts.dataset) if opts.dataset else None,
        seed=opts.seed,
        num_prompts=opts.num_prompts,
        duration_s=opts.duration_s,
        warmup_requests=opts.warmup,
        ignore_eos=opts.ignore_eos,
        temperature=opts.temperature,
        request_timeout_s=opts.request_timeout_s,
    )


class RequestFactory:
    """Request specs for one point: fresh prompts and images per point (and per run), so neither a previous
    point nor a previous run on the same warm server can hit the prefix or multimodal cache by accident."""

    def __init__(self, opts: BenchOptions, run_id: str, sizer: PromptSizer) -> None:
        self.opts = opts
        self.run_id = run_id
        self.sizer = sizer
        self.dataset = load_dataset(opts.dataset, opts.output_tokens) if opts.dataset else None

    def for_point(self, label: str) -> Callable[[int], RequestSpec]:
        opts = self.opts
        if self.dataset is not None:
            data = self.dataset
            return lambda i: replace(data[i % len(data)], index=i)
        planner = ImagePlanner(opts.image_sizes, opts.image_reuse, _point_seed(opts.seed, label),
                               namespace=f"{self.run_id}/{label}", style=opts.image_style)
        cache: list[RequestSpec] = []
        seed = _point_seed(opts.seed, label + "/text")

        def spec_for(index: int) -> RequestSpec:
            while len(cache) <= index:  # in order, so the reuse draws are the same for a seed
                cache.extend(
                    synthetic_requests(
                        1, input_tokens=opts.input_tokens, output_tokens=opts.output_tokens,
                        images_per_request=opts.images_per_request, planner=planner, seed=seed,
                        sizer=self.sizer, start_index=len(cache),
                    )
                )
            return cache[index]

        if opts.num_prompts:
            spec_for(opts.num_prompts - 1)  # render everything before the clock starts
        return spec_for

    def probe_sizes(self) -> list[tuple[int, int]]:
        if self.dataset is None:
            return list(dict.fromkeys(self.opts.image_sizes))
        sizes = []
        for spec in self.dataset:
            for label in spec.image_sizes:
                if label != "?":
                    w, h = label.split("x")
                    sizes.append((int(w), int(h)))
        return list(dict.fromkeys(sizes))[:PROBE_MAX_SIZES]


async def warm_up(client: ChatClient, opts: BenchOptions, sizer: PromptSizer,
                  sizes: list[tuple[int, int]]) -> tuple[dict[str, int], int | None]:
    """Warm-up requests with their own images (never counted), then measure image tokens per image size as
    usage.prompt_tokens(text + one image) - usage.prompt_tokens(same text alone), and the chat template's tokens as
    usage.prompt_tokens(text alone) - the tokenizer's count of that text (None without a tokenizer)."""
    planner = warmup_planner(sizes or [(56, 56)], opts.seed, opts.image_style)
    warm = synthetic_requests(
        opts.warmup, input_tokens=opts.input_tokens, output_tokens=min(opts.output_tokens, 8),
        images_per_request=opts.images_per_request if sizes else 0, planner=planner, seed=opts.seed + 1,
        sizer=sizer,
    )
    failures = [r for r in await asyncio.gather(*(client.send(s) for s in warm)) if not r.success]
    if warm and len(failures) == len(warm):
        raise BenchmarkFailed(f"every warm-up request failed; first error: {failures[0].error}")
    tokens: dict[str, int] = {}
    # The probe's text is made like the measured prompts' (same words), so that how its first word merges with the
    # chat template's last characters (e.g. "USER: " + "the" -> " the") is the same as theirs.
    probe_text = sizer.prompt(np.random.default_rng([opts.seed, 11]), PROBE_TEXT_TOKENS)
    text = RequestSpec(index=-1, prompt=probe_text, max_tokens=1)
    plain = await client.send(text)
    if not plain.success or plain.prompt_tokens is None:
        return tokens, None
    template = None
    if sizer.counter is not None:
        template = plain.prompt_tokens - sizer.counter.count(text.prompt) - sizer.special_tokens
    for width, height in sizes[:PROBE_MAX_SIZES]:
        image = planner.next_image()
        probe = RequestSpec(index=-1, prompt=text.prompt, images=[image.data_url], image_sizes=[image.size_label],
                            max_tokens=1)
        with_image = await client.send(probe)
        if with_image.success and with_image.prompt_tokens is not None:
            tokens[f"{width}x{height}"] = with_image.prompt_tokens - plain.prompt_tokens
    return tokens, template


def build_point(run: PointRun, opts: BenchOptions, tokens_per_image: dict[str, int], server_fields: dict[str, Any],
                gpu: GpuStats, started_iso: str, chat_template_tokens: int | None = None) -> LoadPoint:
    metrics = compute_point_metrics(run.results, run.duration, opts.slo, tokens_per_image)
    metrics.update(input_token_fields(run.results, None if opts.dataset else opts.input_tokens, tokens_per_image,
                                      chat_template_tokens))
    load = run.load
    gpu_fields = gpu.as_fields()
    point = LoadPoint(
        label=load.label,
        max_concurrency=load.max_concurrency,
        request_rate=load.request_rate,
        arrival=load.kind,
        burstiness=load.burstiness,
        started=started_iso,
        incomplete=run.aborted is not None,
        incomplete_reason=run.aborted,
        in_flight_at_abort=run.in_flight_at_abort,
        gpu_energy_j=gpu_fields.pop("gpu_energy_j"),
        energy_per_output_token_j=energy_per_output_token(gpu.gpu_energy_j, metrics["total_output_tokens"]),
        **{k: v for k, v in metrics.items()},
        **server_fields,
        **{k: v for k, v in gpu_fields.items() if k not in ("gpu_energy_j",)},
    )
    if point.incomplete:
        point.meets_slo = None  # a cut-short point proves nothing about the SLO
    return point


async def measure_point(
    client: ChatClient, session: aiohttp.ClientSession, endpoint: Endpoint, opts: BenchOptions, load: LoadSpec,
    factory: RequestFactory, tokens_per_image: dict[str, int], writer: ProfileWriter, progress: Progress,
) -> LoadPoint:
    spec_for = factory.for_point(load.label)
    scraper = MetricsScraper(endpoint.base_url, endpoint.model_name, opts.metrics_interval_s)
    before = await scraper.scrape(session)
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(scraper.sample_during(session, stop))
    gpu = GpuSampler().start()
    cpu = ServerCpu(endpoint.server_pid) if endpoint.server_pid else None
    cpu_before = cpu.sample() if cpu else None
    started_iso = utc_now_iso()
    progress.point_started(load.label, opts.num_prompts)
    failure: BaseException | None = None
    try:
        run = await run_point(
            client, spec_for, load, num_prompts=opts.num_prompts, duration_s=opts.duration_s,
            seed=_point_seed(opts.seed, load.label), liveness=endpoint.liveness, on_result=progress.request_done,
        )
    except (PointAborted, PointInterrupted) as exc:
        run, failure = exc.run, exc
    cpu_after = cpu.sample() if cpu else None
    stop.set()
    await asyncio.gather(sampler, return_exceptions=True)
    gpu_stats = gpu.stop()
    after = await scraper.scrape(session) if failure is None else None
    server_fields = summarize(before, after, scraper.samples).as_fields()
    server_fields.pop("metrics_samples", None)
    completed = sum(1 for r in run.results if r.success)
    server_fields.update(process_cpu.point_fields(cpu_before, cpu_after, completed, run.duration))
    point = build_point(run, opts, tokens_per_image, server_fields, gpu_stats, started_iso,
                        writer.profile.workload.chat_template_tokens)
    writer.add_point(point, [r.to_record(run.started) for r in run.results])
    progress.point_done(point)
    if point.input_tokens_mismatch:
        progress.message(f"warning: {load.label} sent {point.mean_text_input_tokens:.1f} text tokens per request, "
                         f"not the {point.requested_input_tokens} asked for (prompts sized by "
                         f"{writer.profile.workload.prompt_tokenizer}); point marked input_tokens_mismatch")
    if failure is not None:
        raise failure
    return point


async def run_loads(endpoint: Endpoint, opts: BenchOptions, writer: ProfileWriter, progress: Progress,
                    sizer: PromptSizer, processor_probe: host_costs.ProcessorProbe | None = None) -> None:
    factory = RequestFactory(opts, writer.profile.run_id, sizer)
    async with ChatClient(
        endpoint.base_url, endpoint.model_name, timeout_s=opts.request_timeout_s,
        stall_timeout_s=opts.stall_timeout_s, ignore_eos=opts.ignore_eos, temperature=opts.temperature,
    ) as client, aiohttp.ClientSession() as session:
        progress.message(f"warming up ({opts.warmup} requests) and measuring image tokens per image size")
        tokens, template = await warm_up(client, opts, sizer, factory.probe_sizes())
        writer.profile.workload.image_tokens_per_image = tokens
        writer.profile.workload.chat_template_tokens = template
        writer.save()
        server_probe, probe_s = None, 0.0
        if opts.host_costs:
            progress.message("host costs: text-only vs image requests, one at a time")
            started = time.perf_counter()
            sizes = factory.probe_sizes()
            server_probe = await host_costs.probe_server(
                client, sizes[0] if sizes else None, opts.input_tokens, min(opts.output_tokens, 16),
                opts.image_style, sizer, opts.seed,
                cpu=ServerCpu(endpoint.server_pid) if endpoint.server_pid else None)
            probe_s = time.perf_counter() - started

        async def point_for(load: LoadSpec) -> LoadPoint:
            done = writer.point(load.label)
            if done is not None and not done.incomplete:
                progress.message(f"{load.label}: kept from the saved profile (--resume)")
                return done
            return await measure_point(client, session, endpoint, opts, load, factory, tokens, writer, progress)

        if opts.sweep:
            measured: dict[int, Observation] = {}
            while (conc := next_concurrency(measured, bool(opts.slo), opts.sweep_max_concurrency)) is not None:
                point = await point_for(LoadSpec("concurrency", max_concurrency=conc))
                measured[conc] = Observation.of(point)
        else:
            for load in opts.loads:
                await point_for(load)
        if opts.host_costs:
            writer.profile.host_costs = await asyncio.to_thread(
                host_costs.collect, processor_probe, server_probe, probe_s, writer.profile.run_id)
            writer.save()
    method = (
        "sweep: concurrency doubling to saturation, then bisection on the SLO" if opts.sweep
        else "highest measured point meeting the SLO; saturation from the concurrency points"
    )
    writer.set_capacity(capacity_summary(writer.profile.points, opts.slo, method))


def new_profile(target: BenchTarget, device: DeviceInfo, engine: EngineInfo, opts: BenchOptions,
                path: Path, sizer: PromptSizer | None = None) -> BenchmarkProfile:
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    started = utc_now_iso()
    # A campaign job names itself (vlmopt/campaign): the profile then says which job measured it.
    job = os.environ.get(CAMPAIGN_JOB_ENV) or None
    source = f"vlmopt benchmark run {run_id} ({path.name})" + (f" in job {job}" if job else "")
    workload = workload_spec(opts)
    if sizer is not None and not opts.dataset:
        workload.prompt_tokenizer = sizer.source
        workload.tokenizer_special_tokens = sizer.special_tokens if sizer.exact else None
    return BenchmarkProfile(
        model=target.model, model_hub=target.hub, variant=target.variant, variant_method=target.method,
        variant_scheme=target.scheme, manifest=target.manifest, device=device, engine=engine, workload=workload,
        run_id=run_id,
        started=started,
        client=ClientInfo(event_loop=event_loop.loop_choice(), metrics_interval_s=opts.metrics_interval_s),
        provenance=Provenance(kind="measured", source=source, date=started[:10]),
        campaign_job=job,
    )


def check_endpoint(base_url: str, timeout_s: float = 5.0) -> list[str]:
    """GET /v1/models; the served model ids. BenchmarkFailed names the address when it cannot be reached."""
    import json
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return []  # reachable, but lists models only with a key: requests will carry it
        raise BenchmarkFailed(f"endpoint {base_url} answered HTTP {exc.code} on /v1/models") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BenchmarkFailed(f"endpoint {base_url} is unreachable ({reason})") from None
    return [m.get("id", "") for m in body.get("data", []) if isinstance(m, dict)]


def benchmark_target(target: BenchTarget, opts: BenchOptions, progress: Progress | None = None,
                     visible_devices: str | None = None, cancel: threading.Event | None = None) -> Path:
    """Benchmark one target; returns the profile path. Raises BenchmarkFailed or PointInterrupted (after saving)."""
    from .device import detect_device

    progress = progress or SilentProgress()
    if target.endpoint:
        device = DeviceInfo(kind="unknown", name=opts.device_name or f"endpoint {target.endpoint}")
    else:
        device = detect_device(visible_devices)
        if opts.device_name:
            device = device.model_copy(update={"name": opts.device_name, "catalog_id": None})
    path = profile_path_for(opts, target, device)
    progress.variant_started(target, path)

    if target.endpoint:
        served = check_endpoint(target.endpoint)
        if served and target.served_name not in served:
            raise BenchmarkFailed(f"endpoint {target.endpoint} does not serve {target.served_name!r} "
                                  f"(it serves {', '.join(served)})")
        sizer = _prompt_sizer(target, opts, progress)
        engine = EngineInfo(name="openai-compatible", version="unknown", endpoint=target.endpoint)
        writer = ProfileWriter.open(path, new_profile(target, device, engine, opts, path, sizer), opts.resume)
        endpoint = Endpoint(target.endpoint, target.served_name or target.variant, engine, _liveness(None, cancel))
        _run_and_finish(endpoint, opts, writer, progress, sizer, _start_processor_probe(target, opts))
        return path

    from .server import ServerError, VllmServer
    from .support import unservable_reason

    reason = unservable_reason(target.scheme)
    if reason:
        skip = record_unservable(target, opts, device, reason, path)
        raise BenchmarkFailed(f"not benchmarked on this machine: {reason} (recorded in {skip})")
    sizer = _prompt_sizer(target, opts, progress)
    args = server_args_for(target, opts)
    env = {"CUDA_VISIBLE_DEVICES": visible_devices} if visible_devices else {}
    log_dir = opts.out_dir / target.model / "logs"
    progress.message(f"starting vLLM for {target.variant} (logs in {log_dir})")
    probe = _start_processor_probe(target, opts)  # runs while the server starts
    try:
        with VllmServer(args, log_dir=log_dir, startup_timeout_s=opts.startup_timeout_s, env=env) as server:
            engine = EngineInfo(name="vllm", version=server.version, server_args=server.args)
            writer = ProfileWriter.open(path, new_profile(target, device, engine, opts, path, sizer), opts.resume)
            writer.profile.engine = engine  # resume: the args of this run are the ones that matter now
            writer.profile.server_log = str(server.log_path)
            endpoint = Endpoint(server.base_url, server.model_name, engine, _liveness(server.check_alive, cancel),
                                str(server.log_path), server.pgid)
            progress.message(f"vLLM up at {server.base_url} after {server.startup_s or 0:.0f} s")
            _run_and_finish(endpoint, opts, writer, progress, sizer, probe)
    except ServerError as exc:
        raise BenchmarkFailed(str(exc)) from None
    finally:
        if probe is not None and probe.process is not None and probe.process.poll() is None:
            probe.process.kill()
            probe.result(5.0)
    return path


def _start_processor_probe(target: BenchTarget, opts: BenchOptions) -> host_costs.ProcessorProbe | None:
    if not opts.host_costs or target.model_path is None or opts.dataset is not None:
        return None
    from .server import ServeEnvMissing, resolve_serve_python

    try:
        python = resolve_serve_python()
    except ServeEnvMissing:
        return None
    return host_costs.start_processor_probe(python, Path(target.model_path), list(opts.image_sizes),
                                            opts.output_tokens, opts.image_style, opts.seed)


def record_unservable(target: BenchTarget, opts: BenchOptions, device: DeviceInfo, reason: str,
                      path: Path | None = None) -> Path:
    """Write the profile of a variant this device cannot serve: no points, `unservable` = why, so the planner
    treats the (variant, device) option as infeasible with that reason. A measured profile already at the path
    (measured where the variant could be served) is kept as it is."""
    from vlmopt.schemas.common import load_model

    path = path or profile_path_for(opts, target, device)
    if path.exists():
        try:
            existing = load_model(BenchmarkProfile, path)
            if existing.points and not existing.unservable:
                return path
        except Exception:
            pass
    engine = EngineInfo(name="vllm", version="not started")
    profile = new_profile(target, device, engine, opts, path)
    profile.unservable = reason
    profile.complete = True
    profile.finished = profile.started
    profile.provenance = Provenance(kind="measured", source=f"vlmopt benchmark run {profile.run_id}: not served",
                                    date=profile.started[:10], detail=reason)
    writer = ProfileWriter(path, profile)
    profile.requests_file = None  # nothing was sent
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.save()
    return path


def _prompt_sizer(target: BenchTarget, opts: BenchOptions, progress: Progress) -> PromptSizer:
    """Prompts sized in the served model's own tokenizer; a loud note when there is none to be had."""
    if opts.dataset:
        return PromptSizer(None)  # a dataset's prompts are sent as written
    counter = select_token_counter(
        tokenizer=opts.tokenizer, tokenizer_label=opts.tokenizer_label, model_path=target.model_path,
        model_label=target.hub_label, endpoint=target.endpoint, served_name=target.served_name)
    sizer = PromptSizer(counter)
    if sizer.exact:
        progress.message(f"prompts sized with the {sizer.source}")
    else:
        progress.message("warning: no tokenizer for the served model (no /tokenize on the server, no --tokenizer): "
                         "prompts are sized by words and may be far off --input-tokens; each point records "
                         "the tokens actually sent")
    return sizer


def server_args_for(target: BenchTarget, opts: BenchOptions) -> ServerArgs:
    images = opts.images_per_request
    if opts.dataset:
        images = max((len(s.images) for s in load_dataset(opts.dataset, opts.output_tokens)), default=1)
    return ServerArgs(
        model=str(target.model_path),
        served_model_name=target.variant,
        max_model_len=opts.max_model_len,
        max_num_seqs=opts.max_num_seqs,
        limit_mm_per_prompt={"image": images} if images > 1 else None,
        extra_args=list(opts.extra_server_args),
    )


def _run_and_finish(endpoint: Endpoint, opts: BenchOptions, writer: ProfileWriter, progress: Progress,
                    sizer: PromptSizer | None = None,
                    processor_probe: host_costs.ProcessorProbe | None = None) -> None:
    try:
        event_loop.run(run_loads(endpoint, opts, writer, progress, sizer or PromptSizer(None), processor_probe))
    except PointAborted as exc:
        if isinstance(exc.cause, UserCancelled):
            writer.set_capacity(capacity_summary(writer.profile.points, opts.slo, "partial: interrupted"))
            writer.finish(False, "interrupted by the user (Ctrl-C)")
            raise PointInterrupted(exc.run) from None
        writer.set_capacity(capacity_summary(writer.profile.points, opts.slo, "partial: run stopped early"))
        writer.finish(False, f"server died mid-run: {exc}")
        raise BenchmarkFailed(
            f"the server died during point {exc.run.load.label}; kept {len(exc.run.results)} completed requests "
            f"and {len(writer.profile.points)} point(s) in {writer.path} (marked incomplete).\n{exc}"
        ) from None
    except PointInterrupted:
        writer.set_capacity(capacity_summary(writer.profile.points, opts.slo, "partial: interrupted"))
        writer.finish(False, "interrupted by the user (Ctrl-C)")
        raise
    except KeyboardInterrupt:
        writer.finish(False, "interrupted by the user (Ctrl-C)")
        raise
    writer.finish(True)
