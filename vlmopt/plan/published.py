"""Published measurements of VLM serving (vlmopt/data/published_measurements.yaml) and the model's prediction of each.

Every row is a figure exactly as its source prints it, with the source, its date, and what was measured (model,
GPU, precision, engine and version, request shape, load, metric). `predict_row` puts the row's conditions through
the performance model: the bundled architecture, the GPU catalog, the engine version's behaviour
(`host.engine_behaviour`: where preprocessing ran, which processors), the bundled processor timings, and the given
calibration (priors unless told otherwise). scripts/validate_published.py prints every row's error;
docs/cost-model.md#validation discusses them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from vlmopt.hw.models import ModelArch, load_model_arch
from vlmopt.paths import data_file
from vlmopt.schemas.catalog import GpuCatalog
from vlmopt.schemas.common import Provenance, StrictModel

from . import host as host_model
from . import options, perf
from .variants import VariantChoice

# The published measurements, in the data folder (a user's --data-dir / $VLMOPT_DATA_DIR copy wins).
PUBLISHED_DATA = "published_measurements.yaml"


class PublishedMeasurement(StrictModel):
    id: str
    model: str = Field(description="bundled architecture id (vlmopt/hw/models.py)")
    model_ref: str = Field(description="the checkpoint as the source names it")
    scheme: Literal["BF16", "FP8_DYNAMIC", "W8A8", "W4A16", "W4A16_ASYM"]
    gpu: str = Field(description="GPU catalog id")
    gpu_count: int = 1
    gpu_note: str = ""
    engine: str = "vllm"
    engine_version: str
    client: str = ""
    use_case: str = ""
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=1)
    images_per_request: int = Field(ge=0)
    image_size: tuple[int, int] | None = None
    load: Literal["synchronous", "throughput", "concurrency", "rate"]
    concurrency: int | None = None
    rate_rps: float | None = None
    metric: Literal["mean_e2el_s", "max_request_throughput_rps", "median_ttft_ms", "median_tpot_ms",
                    "request_throughput_rps"]
    value: float = Field(gt=0)
    unit: str
    table: str = ""
    source_url: str
    source_title: str
    source_date: str
    retrieved: str


class PublishedDataset(StrictModel):
    schema_version: int = 1
    about: str = ""
    left_out: list[str] = Field(default_factory=list)
    rows: list[PublishedMeasurement]


def load_published(path: Path | None = None) -> PublishedDataset:
    """The published measurements from `path`, else from the data folder (vlmopt.paths.data_file)."""
    return _load_published(path or data_file(PUBLISHED_DATA))


@lru_cache(maxsize=2)
def _load_published(path: Path) -> PublishedDataset:
    return PublishedDataset.model_validate(yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class RowPrediction:
    row: PublishedMeasurement
    predicted: float | None
    prediction: perf.Prediction | None
    host: perf.HostCosts
    why: str = ""

    @property
    def error(self) -> float | None:
        """|predicted - published| / published; None when the model found the load unsustainable."""
        if self.predicted is None:
            return None
        return abs(self.predicted - self.row.value) / self.row.value

    @property
    def ratio(self) -> float | None:
        return None if self.predicted is None else self.predicted / self.row.value


def _variant(row: PublishedMeasurement) -> VariantChoice:
    prov = Provenance(kind="catalog", source=row.source_url, date=row.source_date)
    return VariantChoice(row.scheme.lower(), "published", row.scheme, row.model_ref, None, None, 0.0, 1.0, prov)


def row_inputs(row: PublishedMeasurement, catalog: GpuCatalog, arch_loader: Callable[[str], ModelArch]):
    """(cost, shape, share, max_batch, host) of a row under its engine version's defaults."""
    arch = arch_loader(row.model)
    gpu = catalog.get(row.gpu)
    behaviour = host_model.engine_behaviour(row.engine, row.engine_version)
    share, _ = options.share_of(gpu, options.WHOLE)
    shape = options.request_shape(arch, row.input_tokens, row.output_tokens, row.images_per_request,
                                  row.image_size or (448, 448))
    host = host_model.prior_host_costs(arch.family, row.image_size if row.images_per_request else None,
                                       behaviour=behaviour)
    return options.model_cost(arch, _variant(row), gpu), shape, share, float(behaviour.default_max_num_seqs), host


def observation(row: PublishedMeasurement, catalog: GpuCatalog,
                arch_loader: Callable[[str], ModelArch] = load_model_arch) -> perf.Observation | None:
    """The row as an observation for `perf.fit_efficiency` (closed-loop loads only)."""
    cost, shape, share, max_batch, host = row_inputs(row, catalog, arch_loader)
    if row.metric == "mean_e2el_s" and row.load == "synchronous":
        return perf.Observation(cost, shape, share, max_batch, 1.0 / row.value, None, None, 1, host, None,
                                label=row.id)
    if row.metric == "max_request_throughput_rps":
        return perf.Observation(cost, shape, share, max_batch, row.value, None, None, int(max_batch), host, None,
                                label=row.id)
    return None


def predict_row(row: PublishedMeasurement, catalog: GpuCatalog, eff: perf.Efficiency | None = None,
                arch_loader: Callable[[str], ModelArch] = load_model_arch) -> RowPrediction:
    """The model's figure for one published row, in the row's unit."""
    eff = eff or perf.Efficiency()
    cost, shape, share, max_batch, host = row_inputs(row, catalog, arch_loader)
    if row.load == "synchronous":
        pred = perf.predict_closed_loop(cost, shape, share, eff, 1, max_batch, host)
    elif row.load == "throughput":
        # GuideLLM's throughput mode keeps far more requests in flight than the engine admits: the engine full.
        pred = perf.predict_closed_loop(cost, shape, share, eff, int(max_batch), max_batch, host)
    elif row.load == "concurrency" and row.concurrency:
        pred = perf.predict_closed_loop(cost, shape, share, eff, row.concurrency, max_batch, host)
    else:
        pred = perf.predict(cost, shape, share, eff, row.rate_rps or 0.0, max_batch, host)
    if pred is None:
        return RowPrediction(row, None, None, host, "unsustainable at that load")
    value = {
        "mean_e2el_s": pred.e2el_p50_ms / 1e3,
        "max_request_throughput_rps": pred.rate_rps,
        "request_throughput_rps": pred.rate_rps,
        "median_ttft_ms": pred.ttft_p50_ms,
        "median_tpot_ms": pred.tpot_p50_ms,
    }[row.metric]
    return RowPrediction(row, value, pred, host)


def predict_rows(rows: Sequence[PublishedMeasurement], catalog: GpuCatalog,
                 eff: perf.Efficiency | None = None) -> list[RowPrediction]:
    loader = lru_cache(maxsize=None)(load_model_arch)
    return [predict_row(r, catalog, eff, loader) for r in rows]


__all__ = [
    "PublishedDataset",
    "PublishedMeasurement",
    "RowPrediction",
    "load_published",
    "observation",
    "predict_row",
    "predict_rows",
]
