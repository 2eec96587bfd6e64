"""When each request is sent: fixed concurrency (closed loop) or an open-loop rate (Poisson, constant, gamma).

Same conventions as `vllm bench serve` (`get_request` in upstream `vllm/benchmarks/serve.py`): gamma gaps with
shape=burstiness and scale=1/(rate*burstiness) (burstiness 1 is Poisson), and the summed gaps rescaled so the last
request goes out at N/rate, which keeps throughput stable across seeds. Seeded with numpy's Generator, so a seed
always gives the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

ArrivalKind = Literal["concurrency", "poisson", "constant", "gamma"]


@dataclass(frozen=True)
class LoadSpec:
    """One load level. Concurrency mode: `max_concurrency` requests in flight, sent back to back. Rate modes:
    requests arrive at `rate` req/s (optionally also capped at `max_concurrency`)."""

    kind: ArrivalKind = "concurrency"
    max_concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "concurrency":
            if not self.max_concurrency or self.max_concurrency < 1:
                raise ValueError("concurrency mode needs max_concurrency >= 1")
        else:
            if self.rate is None or not (self.rate > 0):
                raise ValueError(f"{self.kind} arrivals need a rate > 0 req/s")
            if not (self.burstiness > 0):
                raise ValueError("burstiness must be > 0")

    @property
    def label(self) -> str:
        if self.kind == "concurrency":
            return f"c{self.max_concurrency}"
        tail = f"-b{self.burstiness:g}" if self.kind == "gamma" else ""
        cap = f"-c{self.max_concurrency}" if self.max_concurrency else ""
        return f"{self.kind}-r{self.rate:g}{tail}{cap}"

    @property
    def request_rate(self) -> float | str:
        return "inf" if self.rate is None else self.rate


def parse_arrival(text: str) -> tuple[ArrivalKind, float]:
    """'poisson' | 'constant' | 'gamma:B' -> (kind, burstiness)."""
    text = text.strip().lower()
    if text in ("poisson", "constant"):
        return text, 1.0  # type: ignore[return-value]
    if text.startswith("gamma"):
        _, _, value = text.partition(":")
        try:
            burstiness = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"--arrival gamma:B needs a number B, got {value!r}") from None
        if not burstiness > 0:
            raise ValueError("--arrival gamma:B needs B > 0")
        return "gamma", burstiness
    raise ValueError(f"--arrival must be poisson, constant or gamma:B, got {text!r}")


def arrival_offsets(num: int, load: LoadSpec, seed: int = 0) -> list[float]:
    """Seconds after the start at which request i is released (non-decreasing, len == num)."""
    if num <= 0:
        return []
    if load.kind == "concurrency" or load.rate is None or math.isinf(load.rate):
        return [0.0] * num
    if load.kind == "constant":
        gaps = np.full(num, 1.0 / load.rate)
    else:
        shape = 1.0 if load.kind == "poisson" else load.burstiness
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=shape, scale=1.0 / (load.rate * shape), size=num)
    cumulative = np.cumsum(gaps)
    cumulative *= (num / load.rate) / cumulative[-1]
    return [float(x) for x in cumulative]
