"""Which device a benchmark ran on: NVML GPU (or MIG slice) name, else the CPU model.

Inside a Kubernetes pod that was given one MIG slice (`nvidia.com/mig-3g.40gb: 1`), CUDA_VISIBLE_DEVICES is unset:
the NVIDIA container toolkit exposes the slice through NVIDIA_VISIBLE_DEVICES (its MIG UUID) and NVML shows the
parent GPU with only that slice's MIG device reachable
(https://docs.nvidia.com/datacenter/tesla/mig-user-guide/#cuda-visible-devices,
https://github.com/NVIDIA/k8s-device-plugin#configuration-option-details). The slice is found either way, so a
profile measured in a pod names the MIG profile it ran on, not the whole GPU.
"""

from __future__ import annotations

import os
import re

from vlmopt.machine import cpu_model_name
from vlmopt.schemas.profile import DeviceInfo

_MIG_PROFILE = re.compile(r"(\d+g\.\d+gb(?:\+me)?)", re.IGNORECASE)
# NVML names a MIG device "<parent name> MIG <profile>", e.g. "NVIDIA H100 80GB HBM3 MIG 3g.40gb".
_MIG_SUFFIX = re.compile(r"^(?P<parent>.*?)\s+MIG\s+(?P<profile>\d+g\.\d+gb(?:\+me)?)\s*$", re.IGNORECASE)
# NVIDIA_VISIBLE_DEVICES values that name no particular device (NVIDIA container toolkit).
_NO_DEVICE_LIST = {"", "all", "none", "void"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def split_mig_name(name: str) -> tuple[str, str | None]:
    """('NVIDIA H100 80GB HBM3', '3g.40gb') from a MIG device name; (name, None) for a whole GPU."""
    match = _MIG_SUFFIX.match(name.strip())
    if not match:
        return name, None
    return match.group("parent"), match.group("profile").lower()


def with_catalog_id(device: DeviceInfo) -> DeviceInfo:
    """Match a device to its GPU catalog entry (vlmopt/data/gpus.yaml, or the user's), so the planner can use this
    profile for it. A CPU matches only an entry that names it (a user catalog, as `vlmopt demo` builds one).

    A MIG device name as NVML reports it ("NVIDIA H100 80GB HBM3 MIG 3g.40gb") also fills `mig_profile` when it is
    missing, so such a profile counts for the slice, never for the whole GPU."""
    if device.kind not in ("gpu", "cpu"):
        return device
    update: dict[str, object] = {}
    if device.kind == "gpu" and device.mig_profile is None:
        _, profile = split_mig_name(device.name)
        if profile:
            update["mig_profile"] = profile
    if not device.catalog_id:
        try:
            from vlmopt.hw.catalog import load_gpu_catalog, match_gpu

            spec = match_gpu(load_gpu_catalog(), name=device.name)
        except Exception:  # a broken user catalog must not stop a benchmark; the profile just stays unmatched
            spec = None
        if spec:
            update["catalog_id"] = spec.id
    return device.model_copy(update=update) if update else device


def detect_device(visible: str | None = None) -> DeviceInfo:
    """`visible` is what CUDA_VISIBLE_DEVICES will be for the server (an index list, GPU or MIG UUID)."""
    return with_catalog_id(_detect_device(visible))


def _visible_items(visible: str | None, count: int) -> list[str]:
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        container = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
        if container.lower() not in _NO_DEVICE_LIST and container.startswith(("GPU-", "MIG-")):
            visible = container
    items = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return items or [str(i) for i in range(count)]


def _mig_device(pynvml, handle, count: int) -> DeviceInfo:
    mig_name = _text(pynvml.nvmlDeviceGetName(handle))
    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
    match = _MIG_PROFILE.search(mig_name)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
    return DeviceInfo(
        kind="gpu", name=_text(pynvml.nvmlDeviceGetName(parent)),
        mig_profile=match.group(1).lower() if match else mig_name, count=count, memory_gib=round(memory, 1),
    )


def _first_reachable_mig(pynvml, gpu_handle):
    """The first MIG device of a MIG-enabled GPU this process can open (a container sees only its own slice);
    None when MIG is off or none is reachable."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(gpu_handle)
    except Exception:  # not MIG-capable
        return None
    if current != getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return None
    for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu_handle)):
        try:
            return pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu_handle, index)
        except Exception:  # NOT_FOUND / NO_PERMISSION: a slice that is not ours
            continue
    return None


def _detect_device(visible: str | None = None) -> DeviceInfo:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return DeviceInfo(kind="cpu", name=cpu_model_name())
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return DeviceInfo(kind="cpu", name=cpu_model_name())
        items = _visible_items(visible, count)
        first = items[0]
        if first.startswith("MIG-"):
            return _mig_device(pynvml, pynvml.nvmlDeviceGetHandleByUUID(first), len(items))
        handle = (
            pynvml.nvmlDeviceGetHandleByUUID(first) if first.startswith("GPU-")
            else pynvml.nvmlDeviceGetHandleByIndex(int(first))
        )
        mig_handle = _first_reachable_mig(pynvml, handle)
        if mig_handle is not None:
            return _mig_device(pynvml, mig_handle, len(items))
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
