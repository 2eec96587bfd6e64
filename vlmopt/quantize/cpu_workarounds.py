"""The CPU-only workarounds llm-compressor 0.14.0.1 needs on a machine without an accelerator
(docs/quantize.md#awq-on-a-cpu). Each is applied only when needed, only for the duration of a run, and undone
afterwards.

1. AWQ pin memory. AWQ's smoothing step calls `IntermediatesCache.pin_memory()`, which calls `Tensor.pin_memory()`;
   with no accelerator that raises "Cannot access accelerator device when none is available". Pinned memory only
   speeds up host-to-device copies, which do not exist on a CPU-only machine, so making that one method a no-op
   changes no result.

2. bf16 matrix products through fp32 kernels. On a CPU without native bf16 (no AVX512-BF16 or AMX; oneDNN then
   declines bf16, `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is False) PyTorch multiplies bf16 matrices with a
   slow reference path: on an AVX2 machine a [50x256]x[256x256] `linear` costs 0.9 ms in bf16 against 0.17 ms when
   the same numbers go through the fp32 kernel and the result is rounded back to bf16, and an attention `matmul`
   0.73 ms against 0.06 ms. That reference path already accumulates in fp32 and rounds once, so the results are the
   same numbers (bit-identical for the matmul, 99.99% of the linear's outputs, the rest one bf16 ulp apart from a
   different summation order). AWQ replays every smoothed module for every calibration sample at each of its 20 grid
   points, so this is most of its time on such a CPU (docs/quantize.md#awq-on-a-cpu). Set VLMOPT_CPU_BF16_MATMUL=native
   to measure without it.

3. One intra-op thread for a model whose matrices are all small. Every matrix product of a model this small is
   split across the OpenMP threads, and each split waits for all of them to be scheduled: on a busy 2-core machine
   GPTQ's oneshot of the tiny LLaVA took 125 s (52 s of CPU) with 2 threads and 27 s (6 s of CPU) with one, and AWQ,
   which runs many more small products, 703 s against 42 s. A model with any Linear of a million weights or more
   (every real VLM) keeps all threads; so does a run whose OMP_NUM_THREADS the user set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MATMUL_ENV = "VLMOPT_CPU_BF16_MATMUL"  # "fp32" (default where it helps) or "native"
SMALL_MATRIX_WEIGHTS = 1 << 20  # a model whose largest Linear has fewer weights runs oneshot on one thread


def accelerator_available() -> bool:
    import torch

    return bool(torch.accelerator.is_available())


@contextmanager
def awq_pin_memory_workaround() -> Iterator[bool]:
    """Yields True when the patch is active."""
    if accelerator_available():
        yield False
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.__dict__.get("pin_memory")

    def _no_pin(self, *args, **kwargs):  # same signature as the method it replaces
        return None

    IntermediatesCache.pin_memory = _no_pin
    try:
        yield True
    finally:
        if original is None:
            del IntermediatesCache.pin_memory
        else:
            IntermediatesCache.pin_memory = original


def native_bf16_matmul() -> bool:
    """True where oneDNN runs bf16 matrix products natively (AVX512-BF16 / AMX); then nothing is patched."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_matmul_in_fp32_needed() -> bool:
    if os.environ.get(MATMUL_ENV, "fp32").strip().lower() == "native":
        return False
    return not accelerator_available() and not native_bf16_matmul()


@contextmanager
def bf16_matmul_in_fp32() -> Iterator[bool]:
    """While active, CPU `F.linear`, `torch.matmul` and `torch.bmm` on bf16 operands compute through the fp32
    kernels and return bf16, as the bf16 path would. Yields True when the patch is active."""
    if not bf16_matmul_in_fp32_needed():
        yield False
        return
    import torch
    import torch.nn.functional as functional

    bf16 = torch.bfloat16
    linear, matmul, bmm = functional.linear, torch.matmul, torch.bmm

    def _on_cpu_bf16(*tensors: Any) -> bool:
        return all(isinstance(t, torch.Tensor) and t.dtype is bf16 and t.device.type == "cpu" for t in tensors)

    def linear_fp32(input: Any, weight: Any, bias: Any = None) -> Any:
        if _on_cpu_bf16(input, weight) and (bias is None or _on_cpu_bf16(bias)):
            return linear(input.float(), weight.float(), None if bias is None else bias.float()).to(bf16)
        return linear(input, weight, bias)

    def matmul_fp32(input: Any, other: Any, **kwargs: Any) -> Any:
        if not kwargs and _on_cpu_bf16(input, other):
            return matmul(input.float(), other.float()).to(bf16)
        return matmul(input, other, **kwargs)

    def bmm_fp32(input: Any, mat2: Any, **kwargs: Any) -> Any:
        if not kwargs and _on_cpu_bf16(input, mat2):
            return bmm(input.float(), mat2.float()).to(bf16)
        return bmm(input, mat2, **kwargs)

    functional.linear, torch.matmul, torch.bmm = linear_fp32, matmul_fp32, bmm_fp32
    try:
        yield True
    finally:
        functional.linear, torch.matmul, torch.bmm = linear, matmul, bmm


@contextmanager
def one_thread_for_small_matrices(model: Any) -> Iterator[bool]:
    """One torch intra-op thread while active, when there is no accelerator, the user did not set OMP_NUM_THREADS,
    and no Linear of `model` reaches SMALL_MATRIX_WEIGHTS. Yields True when it changed the thread count."""
    import torch

    threads = torch.get_num_threads()
    if threads <= 1 or os.environ.get("OMP_NUM_THREADS") or accelerator_available():
        yield False
        return
    largest = max((m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)), default=0)
    if largest >= SMALL_MATRIX_WEIGHTS:
        yield False
        return
    torch.set_num_threads(1)
    try:
        yield True
    finally:
        torch.set_num_threads(threads)
