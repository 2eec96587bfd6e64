#!/usr/bin/env python
"""Benchmark of `vlmopt quantize` itself: time (wall and CPU), peak memory and fidelity per method on the tiny VLM,
and AWQ's time as a multiple of GPTQ's in the same run, on the same model and calibration samples.

Each method runs in its own fresh process (so peak memory is not inflated by a previous method), on a freshly built
tiny LLaVA; with --repeats, methods alternate (gptq, awq, gptq, awq, ...) so a busy phase of a shared machine hits
both. CPU time (all threads of the child) is reported next to wall time: on a shared machine the wall time says more
about the neighbours than about the method. With --compare-before, GPTQ and AWQ also run as they did before the
CPU changes (VLMOPT_CPU_BF16_MATMUL=native: PyTorch's own bf16 matrix products instead of the fp32 kernels of
vlmopt/quantize/cpu_workarounds.py; VLMOPT_AWQ_GRID=20: llm-compressor's default grid instead of 11 points), so their
effect on time and fidelity is measured in one run. --heldout scores fidelity on more held-out prompts than the CLI's
8, to see past the noise of top-1 on a random tiny model. Prints markdown tables (paste them into docs/quantize.md
and the README) and, with --json, writes the raw figures.

    .venv/bin/python scripts/bench_quantize.py                          # 64 samples, all four methods
    .venv/bin/python scripts/bench_quantize.py --methods gptq,awq --repeats 3 --compare-before --heldout 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("fp8", "int8", "gptq", "awq")
RATIO_TARGET = 3.0  # AWQ may take at most 3x GPTQ's time (docs/quantize.md#awq-on-a-cpu)

_CHILD = """
import json, os, resource, sys, time
from pathlib import Path
from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize
model, out, method = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
samples, heldout = int(sys.argv[4]), int(sys.argv[5])
started, cpu_started = time.perf_counter(), time.process_time()
result = run_quantize(QuantizeRequest(model_dir=model, methods=parse_methods(method), out_dir=out, samples=samples,
                                      max_seq_len=512, force=True, heldout_prompts=heldout))
outcome = result.outcomes[0]
if outcome.status != "created":
    raise SystemExit(f"{method}: {outcome.status}: {outcome.message}")
variant = result.manifest.variant(method)
import torch
print("RESULT " + json.dumps({
    "method": method, "scheme": variant.scheme, "variant_wall_s": variant.wall_time_s,
    "oneshot_s": variant.oneshot_time_s, "oneshot_cpu_s": variant.oneshot_cpu_time_s,
    "run_wall_s": time.perf_counter() - started, "run_cpu_s": time.process_time() - cpu_started,
    "torch_threads": torch.get_num_threads(),
    "variant_peak_bytes": variant.peak_memory_bytes, "process_max_rss_bytes":
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "bytes_on_disk": variant.bytes_on_disk,
    "mean_kl": variant.fidelity.mean_kl, "top1": variant.fidelity.top1_agreement,
    "positions": variant.fidelity.positions, "calibration_samples": variant.calibration.samples}))
"""


def machine() -> str:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            cpu += f" + {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


# Settings per configuration: the defaults now, and the path before the CPU changes.
# "before" also pins OMP_NUM_THREADS (to the torch default unless --threads says otherwise), which keeps the one-thread
# rule for small models (vlmopt/quantize/cpu_workarounds.py) out of it.
CONFIGS = {"now": {}, "before": {"VLMOPT_CPU_BF16_MATMUL": "native", "VLMOPT_AWQ_GRID": "20"}}
CONFIG_LABELS = {"now": f"now (CPU bf16 matmul {os.environ.get('VLMOPT_CPU_BF16_MATMUL', 'fp32')}; AWQ grid "
                        f"{os.environ.get('VLMOPT_AWQ_GRID', '11 on CPU')}; small-model thread rule)",
                 "before": "before (native bf16 matmul; AWQ grid 20; default threads)"}


def run_child(model: Path, out: Path, method: str, samples: int, heldout: int, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(out), method, str(samples), str(heldout)],
                          capture_output=True, text=True, env=env, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{method} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="calibration samples for gptq/awq (the CLI default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for every child (0: leave it to torch and to vlmopt's small-model rule)")
    parser.add_argument("--compare-before", action="store_true",
                        help="also run gptq and awq as before the CPU changes (native bf16 matmul, AWQ grid 20)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out prompts for KL/top-1 (the CLI uses 8)")
    parser.add_argument("--json", type=Path, help="write raw figures here")
    args = parser.parse_args()

    from vlmopt.testing import build_tiny_vlm

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    paths = ["now"] + (["before"] if args.compare_before else [])
    rows: list[dict] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vlmopt-bench-quantize-") as tmp:
        model = build_tiny_vlm(Path(tmp) / "tiny-llava")
        size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        base_env = {**os.environ, "TQDM_DISABLE": "1", "LLM_COMPRESSOR_LOG_LEVEL": "ERROR"}
        import torch

        before_threads = args.threads or torch.get_num_threads()
        if args.threads:
            base_env["OMP_NUM_THREADS"] = str(args.threads)
        for repeat in range(args.repeats):
            for method in methods:
                for path in paths if method in ("gptq", "awq") else paths[:1]:
                    env = {**base_env, **CONFIGS[path]}
                    if path == "before":
                        env["OMP_NUM_THREADS"] = str(before_threads)
                    started = time.perf_counter()
                    row = run_child(model, Path(tmp) / "variants", method, args.samples, args.heldout, env)
                    row |= {"repeat": repeat, "config": path, "load_avg_1m": os.getloadavg()[0]}
                    rows.append(row)
                    print(f"{method} ({path}) #{repeat}: oneshot {row['oneshot_s']:.1f} s wall, "
                          f"{row['oneshot_cpu_s']:.1f} s CPU; KL {row['mean_kl']:.3e}, top-1 {row['top1']:.1%} "
                          f"({time.perf_counter() - started:.0f} s with start-up)", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    threads = ", ".join(sorted({f"{r['config']} {r['torch_threads']}" for r in rows})) or "?"
    print(f"Machine: {machine()}; tiny LLaVA (vlmopt.testing.tiny_vlm, {size / 1024**2:.1f} MiB of weights), "
          f"{args.samples} calibration samples, {args.heldout} held-out prompts, {threads} torch threads, median of "
          f"{args.repeats}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.\n")
    print("| method | configuration | oneshot wall s | oneshot CPU s | variant wall s | peak RSS MiB | size MiB | "
          "mean KL | top-1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in methods:
        for path in paths:
            group = [r for r in rows if r["method"] == method and r["config"] == path]
            if not group:
                continue
            label = CONFIG_LABELS[path]
            print(f"| {method} | {label} | {median(group, 'oneshot_s'):.2f} | {median(group, 'oneshot_cpu_s'):.2f} | "
                  f"{median(group, 'variant_wall_s'):.1f} | {median(group, 'variant_peak_bytes') / 1024**2:.0f} | "
                  f"{median(group, 'bytes_on_disk') / 1024**2:.2f} | {median(group, 'mean_kl'):.3e} | "
                  f"{median(group, 'top1'):.1%} |")
    ratios = {}
    if {"gptq", "awq"} <= set(methods):
        print("\n| configuration | AWQ / GPTQ oneshot, wall | AWQ / GPTQ oneshot, CPU | within 3x |")
        print("|---|---:|---:|---|")
        for path in paths:
            by = {m: [r for r in rows if r["method"] == m and r["config"] == path] for m in ("gptq", "awq")}
            wall = median(by["awq"], "oneshot_s") / median(by["gptq"], "oneshot_s")
            cpu = median(by["awq"], "oneshot_cpu_s") / median(by["gptq"], "oneshot_cpu_s")
            ratios[path] = {"wall": wall, "cpu": cpu}
            print(f"| {CONFIG_LABELS[path]} | {wall:.2f}x | {cpu:.2f}x | "
                  f"{'yes' if max(wall, cpu) <= RATIO_TARGET else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "samples": args.samples, "heldout": args.heldout,
                                         "threads": threads,
                                         "load_average": [load_before[0], load_after[0]], "ratios": ratios,
                                         "rows": rows}, indent=2))
    default = ratios.get("now")
    return 0 if default is None or max(default.values()) <= RATIO_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
