"""What the demo's steps share: its options, its UI protocol, the summary it writes, and the step failure.
Kept apart from runner.py so the steps (local.py, cloud.py) and the runner import these without importing each
other."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field

from vlmopt.schemas.common import SCHEMA_VERSION, StrictModel

StepStatus = Literal["done", "skipped", "failed"]
TOTAL_STEPS = 6


class StepRecord(StrictModel):
    step: str
    status: StepStatus
    seconds: float
    detail: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)


class DemoSummary(StrictModel):
    """demo-summary.json: what the demo did and where everything is."""

    schema_version: int = SCHEMA_VERSION
    started: str
    finished: str | None = None
    out_dir: str
    steps: list[StepRecord] = Field(default_factory=list)
    manifest: str | None = None
    profiles: list[str] = Field(default_factory=list)
    unserved_variants: dict[str, str] = Field(default_factory=dict)
    unservable_records: list[str] = Field(
        default_factory=list, description="the benchmark's records of variants this device cannot serve (with why)")
    local_plan: str | None = None
    local_report: str | None = None
    cloud_plan: str | None = None
    cloud_report: str | None = None


@dataclass
class DemoOptions:
    out_dir: Path = Path("demo-output")
    methods: str = "fp8,int8,gptq,awq"
    calib_samples: int = 16
    concurrency: list[int] = field(default_factory=lambda: [1, 4])
    num_prompts: int = 16
    input_tokens: int = 64
    output_tokens: int = 16
    # A CPU is slow; these SLOs are what a 2-core box meets at low load, so the local plan has something to pick.
    local_slo: dict[str, float] = field(default_factory=lambda: {"ttft_p95_ms": 3000.0, "tpot_p95_ms": 500.0})
    local_peak_rps: float = 0.5
    local_usd_per_hour: float = 0.10
    # The local plan's quality floor (docs/demo.md#the-local-plans-quality-floor): on the random-weight tiny model
    # the 8-bit variants keep 0.90-0.99 top-1 agreement with bf16 and AWQ 0.65-0.79; a plan should not serve the
    # latter, whatever it saves.
    local_min_top1_agreement: float = 0.85
    cloud_workload: Path | None = None  # None: the bundled default (Qwen2.5-VL-7B)
    skip_benchmark: bool = False
    force: bool = False


class DemoUI(Protocol):
    def step(self, index: int, title: str) -> None: ...
    def info(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def bench_progress(self) -> AbstractContextManager[Any]: ...


class DemoStepFailed(RuntimeError):
    pass
