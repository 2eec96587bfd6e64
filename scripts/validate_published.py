"""Predict every published measurement in vlmopt/data/published_measurements.yaml and print the error of each.

Two passes (docs/cost-model.md#validation):
- prior: the model as `vlmopt plan` runs it with no measured profile (priors for the engine, the bundled processor
  timings for the host, the row's engine version deciding where preprocessing runs);
- calibrated, held out by model: the engine calibration fitted to the rows of the other models (same engine
  version), then this model's rows predicted.

    python scripts/validate_published.py                  # prints both tables and the MAPE per metric
    python scripts/validate_published.py --write-errors   # also stores the prior's capacity error for the bands
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vlmopt.hw.catalog import load_gpu_catalog  # noqa: E402
from vlmopt.paths import bundled_data_dir  # noqa: E402
from vlmopt.plan import perf, published  # noqa: E402
from vlmopt.plan.bands import VALIDATION_DATA, ErrorFigure, ValidationErrors, ratio_quantiles  # noqa: E402


def calibrated_held_out(rows, catalog) -> list[published.RowPrediction]:
    out = []
    for model in sorted({r.model for r in rows}):
        train = [o for r in rows if r.model != model
                 if (o := published.observation(r, catalog)) is not None]
        eff = perf.fit_efficiency(train, profiles=len({r.model for r in rows}) - 1)
        out += published.predict_rows([r for r in rows if r.model == model], catalog, eff)
    return out


def summary(preds: list[published.RowPrediction]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for p in preds:
        by.setdefault(p.row.metric, []).append(p.error if p.error is not None else 1.0)
    return {k: float(np.mean(v)) for k, v in by.items()}


def print_table(title: str, preds: list[published.RowPrediction]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("model / precision / GPU", "use case", "load", "metric", "published", "predicted", "error"):
        table.add_column(col, justify="right" if col in ("published", "predicted", "error") else "left")
    for p in preds:
        r = p.row
        table.add_row(f"{r.model} {r.scheme} {r.gpu}", f"{r.use_case} {r.image_size[0]}x{r.image_size[1]}"
                      if r.image_size else r.use_case, r.load, r.metric, f"{r.value:g}",
                      "-" if p.predicted is None else f"{p.predicted:.2f}",
                      "-" if p.error is None else f"{p.error:.0%}")
    Console().print(table)


def markdown(preds_prior, preds_cal) -> str:
    """The table docs/cost-model.md shows: one line per row, prior and held-out calibrated predictions."""
    lines = ["| model | precision | GPU | use case | load | published | prior | error | calibrated | error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cal = {p.row.id: p for p in preds_cal}
    def fmt(pred: published.RowPrediction | None) -> str:
        if pred is None or pred.predicted is None:
            return "- | -"
        return f"{pred.predicted:.2f} | {pred.error:.0%}"

    for p in preds_prior:
        r = p.row
        unit = "s" if r.metric == "mean_e2el_s" else "req/s"
        load = "1 at a time (E2EL)" if r.load == "synchronous" else "max throughput"
        lines.append(f"| {r.model} | {r.scheme} | {r.gpu} | {r.use_case} | {load} | {r.value:g} {unit} | "
                     f"{fmt(p)} | {fmt(cal.get(r.id))} |")
    return "\n".join(lines)


def write_errors(preds: list[published.RowPrediction]) -> None:
    caps = [p for p in preds if p.row.metric == "max_request_throughput_rps"]
    lat = [p.error if p.error is not None else 1.0 for p in preds if p.row.metric == "mean_e2el_s"]
    r10, r90 = ratio_quantiles([p.ratio for p in caps if p.ratio])
    figure = ErrorFigure(kind="prior", ratio_p10=round(r10, 4), ratio_p90=round(r90, 4),
                         capacity_mape=round(float(np.mean([p.error if p.error is not None else 1.0 for p in caps])),
                                             4),
                         median_latency_mape=round(float(np.mean(lat)), 4),
                         cases=len(caps), date=time.strftime("%Y-%m-%d"),
                         how="scripts/validate_published.py: uncalibrated model vs the published maximum throughputs "
                             "in vlmopt/data/published_measurements.yaml")
    # The script updates the figures the package ships (a user data folder is not written to).
    validation_file = bundled_data_dir() / VALIDATION_DATA
    current = ValidationErrors.model_validate(yaml.safe_load(validation_file.read_text()) or {}) \
        if validation_file.is_file() else ValidationErrors()
    figures = [f for f in current.figures if f.kind != "prior"] + [figure]
    validation_file.parent.mkdir(parents=True, exist_ok=True)
    validation_file.write_text(yaml.safe_dump(ValidationErrors(figures=figures).model_dump(), sort_keys=False))
    print(f"wrote {validation_file.relative_to(REPO)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-errors", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write the docs table here")
    args = parser.parse_args()
    catalog = load_gpu_catalog()
    rows = published.load_published().rows
    prior = published.predict_rows(rows, catalog)
    cal = calibrated_held_out(rows, catalog)
    print_table("prior (no calibration)", prior)
    print_table("calibrated on the other models' rows (held out by model)", cal)
    for name, preds in (("prior", prior), ("calibrated, held out by model", cal)):
        print(f"{name}: MAPE " + ", ".join(f"{k} {v:.0%}" for k, v in summary(preds).items())
              + f" over {len(preds)} rows")
    if args.markdown:
        args.markdown.write_text(markdown(prior, cal) + "\n")
    if args.write_errors:
        write_errors(prior)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
