"""Host-side costs of serving, measured where the benchmark runs, for the performance model (docs/cost-model.md).

Two parts, both cheap:
- the model's own processor and tokenizer, timed in the serve env (`_host_probe.py`, a subprocess of the serve
  env's python: the transformers version vLLM uses) on images of the workload's sizes plus two reference sizes,
  in CPU seconds of one thread. vLLM's API server runs exactly this work (fetch, decode, the HF processor) on one
  thread per server process before a request reaches the engine, and detokenises every streamed token. It runs
  while the server starts, so it adds almost no wall time. vLLM's own processor path (`MULTIMODAL_REGISTRY`) would
  add vLLM's hashing, but importing vLLM and building its processor takes about a minute on a small CPU, against
  seconds for the processor itself, so the probe times the HF processor vLLM calls.
- text-only vs image requests, one at a time, against the running server: TTFT and TPOT medians of each.

`vlmopt benchmark --no-host-costs` skips both.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vlmopt.schemas.common import Provenance, utc_now_iso
from vlmopt.schemas.profile import HostCostMeasurement, ImageHostCost, ServerProbe

from .client import ChatClient
from .images import ImagePlanner
from .process_cpu import ServerCpu
from .workload import PromptSizer, RequestSpec

PROBE_SCRIPT = Path(__file__).resolve().parent / "_host_probe.py"
# Besides the workload's own sizes, two reference sizes give the processor cost's growth with pixels.
REFERENCE_SIZES: tuple[tuple[int, int], ...] = ((448, 448), (1024, 768))
PROBE_TIMEOUT_S = 240.0
PROBE_PROMPT = "Describe the picture in one sentence."
SERVER_PROBE_REQUESTS = 3


@dataclass
class ProcessorProbe:
    """A running probe subprocess; `result()` waits for it."""

    process: subprocess.Popen[str] | None
    request_file: Path | None
    started: float
    error: str | None = None

    def result(self, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
        if self.process is None:
            return {"error": self.error or "not started"}
        try:
            out, err = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            return {"error": f"the processor probe took longer than {timeout_s:.0f} s"}
        finally:
            if self.request_file is not None:
                self.request_file.unlink(missing_ok=True)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            tail = (err or "").strip().splitlines()[-1:] or ["no output"]
            return {"error": f"the processor probe failed: {tail[0][:300]}"}
        return json.loads(lines[-1])


def probe_sizes(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return list(dict.fromkeys([*sizes, *REFERENCE_SIZES]))


def start_processor_probe(serve_python: Path, model_dir: Path, sizes: list[tuple[int, int]], output_tokens: int,
                          image_style: str, seed: int = 0, repeats: int = 3) -> ProcessorProbe:
    """Start the probe in the background (it runs while the server starts)."""
    planner = ImagePlanner(probe_sizes(sizes), 0.0, seed, namespace="host-costs", style=image_style)
    images = []
    for _ in probe_sizes(sizes):
        image = planner.next_image()
        images.append({"width": image.width, "height": image.height, "data_url": image.data_url})
    request = {"model_dir": str(model_dir), "prompt": PROBE_PROMPT, "output_tokens": output_tokens,
               "repeats": repeats, "images": images}
    fd, name = tempfile.mkstemp(prefix="vlmopt-host-probe-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(request, handle)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    try:
        process = subprocess.Popen([str(serve_python), str(PROBE_SCRIPT), name], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        return ProcessorProbe(None, None, time.perf_counter(), f"cannot start the serve env's python: {exc}")
    return ProcessorProbe(process, Path(name), time.perf_counter())


async def probe_server(client: ChatClient, image_size: tuple[int, int] | None, input_tokens: int,
                       output_tokens: int, image_style: str, sizer: PromptSizer | None, seed: int = 0,
                       requests_each: int = SERVER_PROBE_REQUESTS, cpu: ServerCpu | None = None) -> ServerProbe:
    """Text-only and image requests one at a time (alternating, so drift hits both alike); medians of latencies,
    and (with `cpu`) the API server's mean CPU seconds per request of each kind."""
    from .workload import synthetic_requests

    planner = ImagePlanner([image_size or (56, 56)], 0.0, seed, namespace="host-costs-server", style=image_style)
    texts = synthetic_requests(requests_each, input_tokens=input_tokens, output_tokens=output_tokens,
                               images_per_request=0, planner=planner, seed=seed + 7, sizer=sizer)
    with_images = synthetic_requests(requests_each, input_tokens=input_tokens, output_tokens=output_tokens,
                                     images_per_request=1 if image_size else 0, planner=planner, seed=seed + 8,
                                     sizer=sizer)
    results: dict[str, list] = {"text": [], "image": []}
    api_cpu: dict[str, list[float]] = {"text": [], "image": []}
    for text, image in zip(texts, with_images, strict=True):
        for kind, spec in (("text", text), ("image", image)):
            before = cpu.sample() if cpu else None
            result = await client.send(RequestSpec(index=-1, prompt=spec.prompt, images=spec.images,
                                                   image_sizes=spec.image_sizes, max_tokens=output_tokens))
            after = cpu.sample() if cpu else None
            if result.success:
                results[kind].append(result)
                if before is not None and after is not None:
                    api_cpu[kind].append(after.api_server_s - before.api_server_s)

    def tpot(r) -> float | None:
        if r.latency is None or r.ttft is None or not r.output_tokens or r.output_tokens < 2:
            return None
        return (r.latency - r.ttft) / (r.output_tokens - 1)

    def median(kind: str, attr: str) -> float | None:
        values = [v for r in results[kind] if (v := (tpot(r) if attr == "tpot" else r.ttft)) is not None]
        return statistics.median(values) * 1e3 if values else None

    return ServerProbe(
        requests_each=requests_each, output_tokens=output_tokens,
        image_size=f"{image_size[0]}x{image_size[1]}" if image_size else None,
        text_ttft_ms=median("text", "ttft"), image_ttft_ms=median("image", "ttft") if image_size else None,
        text_tpot_ms=median("text", "tpot"), image_tpot_ms=median("image", "tpot") if image_size else None,
        text_api_server_cpu_s=statistics.mean(api_cpu["text"]) if api_cpu["text"] else None,
        image_api_server_cpu_s=statistics.mean(api_cpu["image"]) if api_cpu["image"] and image_size else None,
    )


def measurement_from(probe: dict, server: ServerProbe | None, extra_seconds: float, run_id: str,
                     error: str | None = None) -> HostCostMeasurement:
    images = [ImageHostCost(**{k: v for k, v in item.items() if k in ImageHostCost.model_fields})
              for item in probe.get("images", [])]
    errors = [e for e in (error, probe.get("error"), probe.get("processor_error")) if e]
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return HostCostMeasurement(
        processor=probe.get("processor"),
        how=("the model's HF processor and tokenizer in the serve env (one thread, CPU time, median of 3); "
             "text-only vs image requests one at a time against the server"),
        transformers_version=probe.get("transformers"),
        images=images,
        tokenize_cpu_s=probe.get("tokenize_cpu_s"),
        prompt_tokens=probe.get("prompt_tokens"),
        detokenize_cpu_s_per_token=probe.get("detokenize_cpu_s_per_token"),
        server=server,
        matmul_gflops_bfloat16=probe.get("matmul_gflops_bfloat16"),
        matmul_gflops_float32=probe.get("matmul_gflops_float32"),
        memory_copy_gbs=probe.get("memory_copy_gbs"),
        cpu_count=os.cpu_count(),
        load_average=[round(x, 2) for x in load],
        extra_seconds=round(extra_seconds, 2),
        error="; ".join(errors) or None,
        provenance=Provenance(kind="measured", source=f"vlmopt benchmark run {run_id} (host costs)",
                              date=utc_now_iso()[:10]),
    )


def collect(probe: ProcessorProbe | None, server: ServerProbe | None, extra_seconds: float, run_id: str,
            timeout_s: float = PROBE_TIMEOUT_S) -> HostCostMeasurement:
    waited = time.perf_counter()
    result = probe.result(timeout_s) if probe is not None else {"error": "no model folder to time a processor of"}
    return measurement_from(result, server, extra_seconds + time.perf_counter() - waited, run_id)


def run_server_probe(client: ChatClient, sizes: list[tuple[int, int]], input_tokens: int, output_tokens: int,
                     image_style: str, count_tokens, seed: int) -> ServerProbe:
    """Synchronous wrapper for tests and scripts (the runner awaits `probe_server` on its own loop)."""
    return asyncio.run(probe_server(client, sizes[0] if sizes else None, input_tokens, output_tokens, image_style,
                                    count_tokens, seed))
