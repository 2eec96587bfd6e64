#!/usr/bin/env python
"""Benchmark of `vlmopt quantize` itself: wall time and peak memory per method on the tiny VLM.

Each method runs in its own fresh process (so peak memory is not inflated by a previous method), on a freshly built
tiny LLaVA. Prints a markdown table (paste it into docs/quantize.md) and, with --json, writes the raw figures.

    .venv/bin/python scripts/bench_quantize.py --samples 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ("fp8", "int8", "gptq", "awq")

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize
model, out, method, samples = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
result = run_quantize(QuantizeRequest(model_dir=model, methods=parse_methods(method), out_dir=out, samples=samples,
                                      max_seq_len=512, force=True))
total = time.perf_counter() - started
variant = result.manifest.variant(method)
print("RESULT " + json.dumps({
    "method": method, "scheme": variant.scheme, "variant_wall_s": variant.wall_time_s,
    "oneshot_s": variant.oneshot_time_s, "run_wall_s": total,
    "variant_peak_bytes": variant.peak_memory_bytes, "process_max_rss_bytes":
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "bytes_on_disk": variant.bytes_on_disk,
    "mean_kl": variant.fidelity.mean_kl, "top1": variant.fidelity.top1_agreement}))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="calibration samples for gptq/awq")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="write raw figures here")
    args = parser.parse_args()

    from vlmopt.testing import build_tiny_vlm

    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmopt-bench-quantize-") as tmp:
        model = build_tiny_vlm(Path(tmp) / "tiny-llava")
        env = {**os.environ, "TQDM_DISABLE": "1", "LLM_COMPRESSOR_LOG_LEVEL": "ERROR"}
        for method in args.methods.split(","):
            for repeat in range(args.repeats):
                proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(Path(tmp) / "variants"), method,
                                       str(args.samples)], capture_output=True, text=True, env=env, check=False)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode or line is None:
                    print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                    return 1
                row = json.loads(line[len("RESULT "):]) | {"repeat": repeat}
                rows.append(row)
                print(f"{method} #{repeat}: {row['variant_wall_s']:.1f} s", file=sys.stderr)

    print(f"Machine: {machine()}; tiny LLaVA (vlmopt.testing.tiny_vlm), {args.samples} calibration samples.\n")
    print("| method | scheme | oneshot s | variant wall s | peak RSS (variant) MiB | process max RSS MiB | "
          "size MiB | mean KL | top-1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['scheme']} | {r['oneshot_s']:.2f} | {r['variant_wall_s']:.1f} | "
              f"{r['variant_peak_bytes'] / 1024**2:.0f} | {r['process_max_rss_bytes'] / 1024**2:.0f} | "
              f"{r['bytes_on_disk'] / 1024**2:.2f} | {r['mean_kl']:.2e} | {r['top1']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "samples": args.samples, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
