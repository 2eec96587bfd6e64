"""Wall time and peak memory of one variant's quantization.

On a GPU the peak is `torch.cuda.max_memory_allocated` (reset per variant). On CPU the process's resident set size
is sampled in a background thread: `ru_maxrss` is a high-water mark for the whole process, so it cannot give a peak
per variant when several variants run one after another.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Measurement:
    wall_time_s: float = 0.0
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""


class PeakMemory:
    """Context manager measuring wall time and peak memory of its block."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.result = Measurement()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_rss = 0
        self._start = 0.0
        self._cuda = False

    def __enter__(self) -> PeakMemory:
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            process = psutil.Process()
            self._peak_rss = process.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(self.interval_s):
                    self._peak_rss = max(self._peak_rss, process.memory_info().rss)

            self._thread = threading.Thread(target=sample, name="vlmopt-peak-rss", daemon=True)
            self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self.result.wall_time_s = time.perf_counter() - self._start
        if self._cuda:
            torch.cuda.synchronize()
            self.result.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
            self.result.peak_memory_kind = "gpu_max_allocated"
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            import psutil

            self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)
            self.result.peak_memory_bytes = int(self._peak_rss)
            self.result.peak_memory_kind = "cpu_rss"
