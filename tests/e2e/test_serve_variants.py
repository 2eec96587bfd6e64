"""The quantized variants load and answer image prompts in the real vLLM server (serve env).

On a CPU, vLLM serves FP8_DYNAMIC and W8A8 everywhere, but W4A16 (GPTQ, AWQ) only where the CPU has AVX-512: its
`cpu_gemm_wna16` kernel is missing from the AVX2 build (docs/quantize.md). One server
at a time; each start takes about a minute on 2 cores. FP8 and INT8 are served (with image prompts, and the
quantization config checked in the server log) by tests/e2e/test_benchmark_e2e.py, which starts their servers
anyway; this file covers the W4A16 variants no other test serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlmopt.bench.server import VllmServer
from vlmopt.bench.support import unservable_reason
from vlmopt.schemas import ServerArgs, VariantManifest, load_model

from .chat import png_data_url, stream_chat

TEXT = {"type": "text", "text": "what is in the image"}


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_variant_serves_image_prompts(method: str, tiny_variants: Path, serve_python: Path,
                                      tmp_path: Path) -> None:
    manifest = load_model(VariantManifest, tiny_variants)
    why_not = unservable_reason(manifest.variant(method).scheme)
    if why_not:
        pytest.skip(why_not)
    variant_dir = manifest.variant_dir(method, tiny_variants)
    # No --quantization flag: vLLM reads the compressed-tensors config from the checkpoint's quantization_config.
    args = ServerArgs(model=str(variant_dir), served_model_name=f"tiny-{method}", max_model_len=1024, max_num_seqs=4)
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with VllmServer(args, log_dir=tmp_path, startup_timeout_s=600, env=env, python=serve_python) as server:
        text_only = stream_chat(server.base_url, server.model_name, [TEXT])
        with_images = [
            stream_chat(server.base_url, server.model_name,
                        [{"type": "image_url", "image_url": {"url": png_data_url(seed)}}, TEXT])
            for seed in (1, 2)
        ]
        server.check_alive()
        log = server.log_path.read_text(errors="replace")
    assert "compressed-tensors" in log or "compressed_tensors" in log, "vLLM did not load the quantization config"
    for result in (text_only, *with_images):
        assert result["done"] and result["usage"]["completion_tokens"] >= 1, result
    for result in with_images:
        extra = result["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"]
        assert extra >= 16, "the 56x56 image should add 16 image tokens"
