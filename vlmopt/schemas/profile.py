"""Benchmark profile: profiles/<model>/<variant>@<device>.json, written by `vlmopt benchmark`, read by plan/report.

Load-point keys follow `vllm bench serve`'s result JSON so numbers can be compared key by key
(docs/benchmark.md#how-the-client-compares-with-vllm-bench-serve).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .common import SCHEMA_VERSION, HubReference, Provenance, StrictModel


class ServerArgs(StrictModel):
    """Every argument vlmopt passes to `vllm.entrypoints.openai.api_server`; recorded verbatim in profiles."""

    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    max_model_len: int | None = 1024
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    dtype: str | None = None
    limit_mm_per_prompt: dict[str, int] | None = None
    tensor_parallel_size: int | None = None
    enforce_eager: bool = False
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="non-secret env vars set for the server")

    def to_cli(self) -> list[str]:
        import json

        args = ["--model", self.model]
        pairs: list[tuple[str, object]] = [
            ("--served-model-name", self.served_model_name),
            ("--host", self.host),
            ("--port", self.port),
            ("--max-model-len", self.max_model_len),
            ("--max-num-seqs", self.max_num_seqs),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
            ("--quantization", self.quantization),
            ("--dtype", self.dtype),
            ("--tensor-parallel-size", self.tensor_parallel_size),
        ]
        for flag, value in pairs:
            if value is not None:
                args += [flag, str(value)]
        if self.limit_mm_per_prompt is not None:
            args += ["--limit-mm-per-prompt", json.dumps(self.limit_mm_per_prompt, separators=(",", ":"))]
        if self.enforce_eager:
            args.append("--enforce-eager")
        return args + list(self.extra_args)


class DeviceInfo(StrictModel):
    kind: Literal["gpu", "cpu", "unknown"] = Field(description="unknown: an external --endpoint's hardware")
    name: str = Field(description="GPU name from NVML, or CPU model name")
    mig_profile: str | None = None
    count: int = 1
    memory_gib: float | None = None
    catalog_id: str | None = Field(default=None, description="GPU catalog key (vlmopt/data/gpus.yaml), when matched")

    def slug(self) -> str:
        base = self.catalog_id or self.name
        # File-name safe on every OS: endpoint URLs and CPU names carry ':', '/', '(' and the like.
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base.lower())
        base = "-".join(part for part in base.split("-") if part)
        if self.mig_profile:
            base += "-mig-" + self.mig_profile.replace(".", "_")
        return base if self.count == 1 else f"{base}-x{self.count}"


class EngineInfo(StrictModel):
    name: str = "vllm"
    version: str = ""
    server_args: ServerArgs | None = None
    endpoint: str | None = Field(default=None, description="set when benchmarking an external server")


# photo: gradient plus mild noise; noise: uniform random pixels, as vllm bench serve's random-mm (bench/images.py)
ImageStyle = Literal["photo", "noise"]


class ClientInfo(StrictModel):
    """How vlmopt's client measured: what sets its own overhead and the server-side samples (docs/benchmark.md)."""

    event_loop: str = Field(default="asyncio", description="uvloop | asyncio")
    metrics_interval_s: float = Field(
        default=1.0, ge=0, description="seconds between /metrics samples during a point; 0: before/after only"
    )


class WorkloadSpec(StrictModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    images_per_request: int = 1
    image_sizes: list[tuple[int, int]] = Field(default_factory=lambda: [(56, 56)])
    image_reuse: float = Field(default=0.0, ge=0, le=1)
    image_style: ImageStyle = Field(
        default="photo", description="synthetic images: photo-like gradient or uniform noise (vllm random-mm)"
    )
    dataset: str | None = None
    seed: int = 0
    num_prompts: int | None = Field(default=None, description="requests per point (or None with duration_s)")
    duration_s: float | None = None
    warmup_requests: int = 0
    ignore_eos: bool = Field(default=True, description="output length forced to output_tokens (vLLM ignore_eos)")
    temperature: float | None = 0.0
    request_timeout_s: float | None = None
    image_tokens_per_image: dict[str, int] = Field(
        default_factory=dict,
        description="measured: usage.prompt_tokens with one image of that WxH minus without it (warm-up probe)",
    )
    prompt_tokenizer: str | None = Field(
        default=None, description="how prompts were sized: the server's /tokenize, a local tokenizer, or words (a "
        "guess); absent in profiles written before it was recorded"
    )
    tokenizer_special_tokens: int | None = Field(
        default=None, ge=0, description="tokens the tokenizer adds on its own (BOS...); input_tokens includes them, "
        "as vllm bench serve's --random-input-len does"
    )
    chat_template_tokens: int | None = Field(
        default=None, description="measured: usage.prompt_tokens of a text-only probe minus the tokenizer's count of "
        "its text (special tokens included): what the chat template adds to every request"
    )


class LoadPoint(StrictModel):
    """One measured load level. Latency keys: mean/median/std/p90/p95/p99 for ttft, tpot, itl, e2el (ms)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())  # the percentile family is open-ended

    label: str
    max_concurrency: int | None = None
    request_rate: float | str | None = Field(default=None, description="req/s offered, or 'inf'")
    arrival: str = "concurrency"
    burstiness: float = 1.0
    num_prompts: int = 0
    completed: int = 0
    failed: int = 0
    duration: float = 0.0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    request_throughput: float = 0.0
    output_throughput: float = 0.0
    total_token_throughput: float = 0.0
    request_goodput: float | None = None
    images_per_s: float = 0.0
    image_token_share: float | None = None
    errors: dict[str, int] = Field(default_factory=dict)
    mm_cache_hit_rate: float | None = None
    prefix_cache_hit_rate: float | None = None
    max_kv_cache_usage_perc: float | None = None
    mean_kv_cache_usage_perc: float | None = None
    max_num_requests_running: float | None = None
    max_num_requests_waiting: float | None = None
    num_preemptions: float | None = None
    gpu_utilization_mean: float | None = None
    gpu_memory_used_bytes_max: int | None = None
    energy_per_output_token_j: float | None = None
    meets_slo: bool | None = None
    incomplete: bool = False
    incomplete_reason: str | None = None
    in_flight_at_abort: int = 0
    good_fraction: float | None = None
    mean_prompt_tokens: float | None = None
    requested_input_tokens: int | None = Field(
        default=None, description="input tokens asked per request (--input-tokens); None for a dataset"
    )
    mean_text_input_tokens: float | None = Field(
        default=None, description="measured: usage.prompt_tokens minus image tokens minus the chat template's tokens, "
        "mean per completed request (what vllm bench serve counts as input_len)"
    )
    mean_image_input_tokens: float | None = Field(
        default=None, description="image tokens per completed request, from the per-size warm-up probe"
    )
    input_tokens_deviation: float | None = Field(
        default=None, description="mean_text_input_tokens / requested_input_tokens - 1"
    )
    input_tokens_mismatch: bool = Field(
        default=False, description="the text actually sent differs from the request by more than 5%: this point "
        "measured another workload than the one asked for"
    )
    mean_num_requests_running: float | None = None
    server_mean_queue_time_ms: float | None = None
    gpu_power_w_mean: float | None = None
    gpu_energy_j: float | None = None
    started: str | None = None
    api_server_cpu_s_per_request: float | None = Field(
        default=None, description="CPU seconds of vLLM's API server process per completed request (host cost)")
    engine_cpu_s_per_request: float | None = Field(default=None, description="the engine core and its workers")
    api_server_cpu_util: float | None = Field(default=None, description="API server cores busy during the point")
    engine_cpu_util: float | None = None
    api_server_cpu_wait_share: float | None = Field(
        default=None, description="share of the API server's runnable time spent waiting for a CPU (other load)")
    engine_cpu_wait_share: float | None = Field(
        default=None, description="share of the engine's runnable time spent waiting for a CPU (other load)")


class CapacitySummary(StrictModel):
    slo: dict[str, float] = Field(default_factory=dict, description="e.g. {'ttft_p95_ms': 500}")
    max_rate_meeting_slo: float | None = Field(default=None, description="req/s; None if no point met it")
    max_concurrency_meeting_slo: int | None = None
    saturation_rate: float | None = Field(default=None, description="req/s where throughput stops growing")
    saturation_concurrency: int | None = None
    saturation_reached: bool = False
    method: str = ""


class ImageHostCost(StrictModel):
    """One image size through the model's own processor, timed in the serve env (CPU seconds, one thread)."""

    width: int
    height: int
    bytes: int | None = Field(default=None, description="size of the data URL sent")
    decode_cpu_s: float = Field(ge=0, description="data URL -> decoded RGB image")
    preprocess_cpu_s: float = Field(ge=0, description="the model's processor on the prompt with this one image")
    decode_wall_s: float | None = None
    preprocess_wall_s: float | None = None
    tokens: int | None = Field(default=None, description="prompt tokens the image added through the processor")

    @property
    def cpu_s(self) -> float:
        return self.decode_cpu_s + self.preprocess_cpu_s


class ServerProbe(StrictModel):
    """Text-only vs image requests, one at a time, against the running server (medians)."""

    requests_each: int
    output_tokens: int
    image_size: str | None = None
    text_ttft_ms: float | None = None
    image_ttft_ms: float | None = None
    text_tpot_ms: float | None = None
    image_tpot_ms: float | None = None
    text_api_server_cpu_s: float | None = Field(default=None, description="API server CPU per text-only request")
    image_api_server_cpu_s: float | None = Field(default=None, description="API server CPU per image request")


class HostCostMeasurement(StrictModel):
    """Host-side costs of serving, measured where the benchmark ran (docs/cost-model.md#host-costs)."""

    processor: str | None = Field(default=None, description="processor class timed, e.g. 'LlavaProcessor'")
    how: str = Field(description="what ran, in which environment")
    transformers_version: str | None = None
    images: list[ImageHostCost] = Field(default_factory=list)
    tokenize_cpu_s: float | None = Field(default=None, ge=0, description="chat template + tokenising one prompt")
    prompt_tokens: int | None = None
    detokenize_cpu_s_per_token: float | None = Field(default=None, ge=0)
    server: ServerProbe | None = None
    matmul_gflops_bfloat16: float | None = Field(default=None, description="one thread, GFLOP per CPU second")
    matmul_gflops_float32: float | None = None
    memory_copy_gbs: float | None = Field(default=None, description="one thread, GB read + written per CPU second")
    cpu_count: int | None = None
    load_average: list[float] = Field(default_factory=list, description="1, 5 and 15 min when measured")
    extra_seconds: float | None = Field(default=None, description="wall time the measurement added to the run")
    error: str | None = Field(default=None, description="why a part could not be measured")
    provenance: Provenance | None = None


class BenchmarkProfile(StrictModel):
    schema_version: int = SCHEMA_VERSION
    model: str = Field(description="base model name")
    model_hub: HubReference | None = Field(
        default=None, description="the hub repo and commit of the (base) model, when it was given as a hub id"
    )
    variant: str
    variant_method: str = "none"
    variant_scheme: str = "BF16"
    manifest: str | None = None
    device: DeviceInfo
    engine: EngineInfo
    client: ClientInfo | None = Field(default=None, description="absent in profiles written before it existed")
    workload: WorkloadSpec
    points: list[LoadPoint] = Field(default_factory=list)
    capacity: CapacitySummary | None = None
    run_id: str = ""
    started: str = ""
    finished: str | None = None
    complete: bool = False
    incomplete_reason: str | None = None
    requests_file: str | None = Field(default=None, description="per-request JSONL beside the profile")
    provenance: Provenance | None = Field(default=None, description="measured: which run, where, when")
    server_log: str | None = None
    host_costs: HostCostMeasurement | None = Field(
        default=None, description="host-side costs measured beside the load points; absent in older profiles")
    unservable: str | None = Field(
        default=None, description="set (with no points) when the variant cannot be served on this device: why")
    campaign_job: str | None = Field(
        default=None,
        description="'<campaign>/<job>' when a benchmark campaign's Kubernetes or SkyPilot job measured it "
        "(from $VLMOPT_CAMPAIGN_JOB; docs/benchmark.md#campaigns)",
    )
