"""`vlmopt gpus`: NVML inventory (read-only)."""

from __future__ import annotations

import typer

from ._common import console


def register(app: typer.Typer) -> None:
    @app.command("gpus", help="List GPUs, memory, MIG mode and MIG profiles through NVML (read-only).")
    def gpus_cmd() -> None:
        try:
            import pynvml
        except ImportError:
            console.print("NVML unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py).")
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            console.print(f"No NVIDIA driver found (NVML: {exc}); no GPUs to list.")
            return
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                console.print(f"GPU {index}: {pynvml.nvmlDeviceGetName(handle)}, {memory.total / 2**30:.1f} GiB")
        finally:
            pynvml.nvmlShutdown()
