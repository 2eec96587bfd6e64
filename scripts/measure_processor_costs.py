"""Time every VLM family's real image processor per image size on this CPU -> vlmopt/data/processor_costs.yaml.

The performance model uses the table where no benchmark measured the serving host's own preprocessing
(vlmopt/plan/host.py): it is what vLLM's API server spends per image (JPEG decode + the model's HF processor), in
CPU seconds of one thread. Both image-processor backends of transformers are timed: `torchvision` (the fast
processors, the default in transformers 5) and `pil` (the slow ones older vLLM releases ran with).

    python scripts/measure_processor_costs.py              # writes the table
    python scripts/measure_processor_costs.py --dry-run    # prints it only
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from vlmopt.paths import bundled_data_dir  # noqa: E402
from vlmopt.plan.host import PROCESSOR_COSTS_DATA  # noqa: E402

SIZES = [(480, 360), (640, 480), (1280, 720), (1680, 2240)]
REPEATS = 3


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _time(fn, repeats: int = REPEATS) -> float:
    fn()  # warm: lazy imports, caches
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def measure(backends: list[str]) -> dict:
    import torch
    import transformers
    from PIL import Image

    from vlmopt.hw.processor_families import families, synthetic_image
    from vlmopt.machine import cpu_model_name

    torch.set_num_threads(1)
    rows = []
    for name, fam in families().items():
        for backend in backends:
            processor = fam.processor(backend)
            sizes = []
            for width, height in SIZES:
                data = _jpeg(synthetic_image(width, height))
                text = [fam.placeholder + "describe"]

                def one(data: bytes = data, text: list[str] = text, processor=processor) -> int:
                    image = Image.open(io.BytesIO(data)).convert("RGB")
                    out = processor(text=text, images=[[image]], return_tensors="pt")
                    return len(out["input_ids"][0])

                cpu_s = _time(one)
                sizes.append({"width": width, "height": height, "cpu_s": round(cpu_s, 5), "tokens": one()})
                print(f"{name:16s} {backend:11s} {width}x{height}: {cpu_s * 1e3:8.1f} ms", flush=True)
            rows.append({"family": name, "backend": backend, "processor": type(processor).__name__ + " + "
                         + type(processor.image_processor).__name__, "published": fam.published, "sizes": sizes})
    return {
        "schema_version": 1,
        "cpu": cpu_model_name(),
        "measured": time.strftime("%Y-%m-%d"),
        "how": ("scripts/measure_processor_costs.py: JPEG decode + the family's transformers processor on one image "
                "and a short prompt, one thread, CPU seconds (median of 3 after a warm-up); load average "
                f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"),
        "transformers_version": transformers.__version__,
        "families": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--backend", action="append", choices=["torchvision", "pil"])
    parser.add_argument("--out", type=Path, default=bundled_data_dir() / PROCESSOR_COSTS_DATA)
    args = parser.parse_args()
    table = measure(args.backend or ["torchvision", "pil"])
    if not args.dry_run:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Written by scripts/measure_processor_costs.py; do not edit by hand.\n"
                            + yaml.safe_dump(table, sort_keys=False))
        print(f"wrote {args.out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
