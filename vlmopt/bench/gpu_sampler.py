"""NVML sampling during a load point: GPU utilisation, memory used, power, and energy per output token.

Without NVML (no driver, CPU-only machine) every field stays None; nothing is estimated in its place. Energy comes
from the driver's cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) when it
exists, else from integrating sampled power over time.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class GpuStats:
    gpu_utilization_mean: float | None = None  # percent
    gpu_utilization_max: float | None = None
    gpu_memory_used_bytes_max: int | None = None
    gpu_power_w_mean: float | None = None
    gpu_energy_j: float | None = None
    energy_source: str | None = None  # "nvml energy counter" | "integrated nvml power samples"

    def as_fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _load_nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def visible_gpu_indices(count: int) -> list[int]:
    """Indices of the GPUs a server started with our env would use (CUDA_VISIBLE_DEVICES as integers)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return list(range(count))
    picked = [int(x) for x in visible.split(",") if x.strip().isdigit() and int(x) < count]
    return picked or list(range(count))


class GpuSampler:
    """Background thread sampling NVML every `interval_s` between start() and stop()."""

    def __init__(self, interval_s: float = 0.25, indices: list[int] | None = None) -> None:
        self.interval_s = interval_s
        self._nvml = _load_nvml()
        self._handles: list[Any] = []
        if self._nvml is not None:
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [
                self._nvml.nvmlDeviceGetHandleByIndex(i) for i in (indices or visible_gpu_indices(count))
            ]
        self._samples: list[tuple[float, float, int, float | None]] = []  # (t, util%, mem bytes, power W)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_start: float | None = None
        self._energy_end: float | None = None

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def _energy_mj(self) -> float | None:
        try:
            return float(sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles))
        except Exception:
            return None

    def _sample(self) -> None:
        nvml, now = self._nvml, time.monotonic()
        try:
            util = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            mem = [nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles]
        except Exception:
            return
        try:
            power: float | None = sum(nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0
        except Exception:
            power = None
        self._samples.append((now, sum(util) / len(util), int(sum(mem)), power))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> GpuSampler:
        if not self.available:
            return self
        self._energy_start = self._energy_mj()
        self._thread = threading.Thread(target=self._loop, name="vlmopt-nvml", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> GpuStats:
        if not self.available:
            return GpuStats()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        self._energy_end = self._energy_mj()
        return self.stats()

    def stats(self) -> GpuStats:
        samples = self._samples
        if not samples:
            return GpuStats()
        utils = [s[1] for s in samples]
        powers = [(s[0], s[3]) for s in samples if s[3] is not None]
        stats = GpuStats(
            gpu_utilization_mean=sum(utils) / len(utils),
            gpu_utilization_max=max(utils),
            gpu_memory_used_bytes_max=max(s[2] for s in samples),
            gpu_power_w_mean=(sum(p for _, p in powers) / len(powers)) if powers else None,
        )
        if self._energy_start is not None and self._energy_end is not None:
            stats.gpu_energy_j = (self._energy_end - self._energy_start) / 1000.0
            stats.energy_source = "nvml energy counter"
        elif len(powers) >= 2:
            stats.gpu_energy_j = integrate_power(powers)
            stats.energy_source = "integrated nvml power samples"
        return stats


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Trapezoid rule over (monotonic seconds, watts) -> joules."""
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


def energy_per_output_token(energy_j: float | None, output_tokens: int) -> float | None:
    if energy_j is None or output_tokens <= 0:
        return None
    return energy_j / output_tokens
