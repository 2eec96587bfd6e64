"""Which device a benchmark ran on: NVML GPU (or MIG slice) name, else the CPU model."""

from __future__ import annotations

import os
import re

from vlmopt.machine import cpu_model_name
from vlmopt.schemas.profile import DeviceInfo

_MIG_PROFILE = re.compile(r"(\d+g\.\d+gb(?:\+me)?)", re.IGNORECASE)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def with_catalog_id(device: DeviceInfo) -> DeviceInfo:
    """Match a GPU to its GPU catalog entry (vlmopt/data/gpus.yaml), so the planner can use this profile for it."""
    if device.kind != "gpu" or device.catalog_id:
        return device
    try:
        from vlmopt.hw.catalog import load_gpu_catalog, match_gpu

        spec = match_gpu(load_gpu_catalog(), name=device.name)
    except Exception:  # a broken user catalog must not stop a benchmark; the profile just stays unmatched
        return device
    return device.model_copy(update={"catalog_id": spec.id}) if spec else device


def detect_device(visible: str | None = None) -> DeviceInfo:
    """`visible` is what CUDA_VISIBLE_DEVICES will be for the server (an index list, GPU or MIG UUID)."""
    return with_catalog_id(_detect_device(visible))


def _detect_device(visible: str | None = None) -> DeviceInfo:
    visible = visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return DeviceInfo(kind="cpu", name=cpu_model_name())
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return DeviceInfo(kind="cpu", name=cpu_model_name())
        items = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
        first = items[0]
        if first.startswith("MIG-"):
            handle = pynvml.nvmlDeviceGetHandleByUUID(first)
            mig_name = _text(pynvml.nvmlDeviceGetName(handle))
            parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            match = _MIG_PROFILE.search(mig_name)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            return DeviceInfo(
                kind="gpu", name=_text(pynvml.nvmlDeviceGetName(parent)),
                mig_profile=match.group(1) if match else mig_name, count=len(items), memory_gib=round(memory, 1),
            )
        handle = (
            pynvml.nvmlDeviceGetHandleByUUID(first) if first.startswith("GPU-")
            else pynvml.nvmlDeviceGetHandleByIndex(int(first))
        )
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
        return DeviceInfo(kind="gpu", name=_text(pynvml.nvmlDeviceGetName(handle)), count=len(items),
                          memory_gib=round(memory, 1))
    except Exception:
        return DeviceInfo(kind="cpu", name=cpu_model_name())
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
