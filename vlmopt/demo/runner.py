"""The whole chain on one machine: tiny VLM -> quantize -> benchmark what the local vLLM serves -> plan on the
local device (measured) -> plan a bundled real VLM on cloud GPUs (estimated) -> deploy bundles -> cost reports.

Each step writes its files through the stage's own API (the same code the CLI commands run), so the demo is
proof that the stages fit together, not a separate code path. A failure in one benchmark or plan is recorded in
`demo-summary.json` and the demo goes on with what it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vlmopt.schemas.common import save_model, utc_now_iso

from .cloud import plan_cloud
from .common import TOTAL_STEPS, DemoOptions, DemoStepFailed, DemoSummary, DemoUI, StepRecord, StepStatus
from .local import plan_local_device


def run_demo(options: DemoOptions, ui: DemoUI) -> DemoSummary:
    out = options.out_dir.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(started=utc_now_iso(), out_dir=str(out))
    summary_path = out / "demo-summary.json"

    def record(step: str, status: StepStatus, seconds: float, detail: str = "", **outputs: str) -> None:
        summary.steps.append(StepRecord(step=step, status=status, seconds=round(seconds, 2), detail=detail,
                                        outputs=outputs))
        save_model(summary, summary_path)  # after every step: a crash keeps what was done

    steps: list[tuple[str, Callable[[DemoOptions, Path, DemoSummary, DemoUI], tuple[StepStatus, str, dict]]]] = [
        ("tiny model", _step_tiny_model),
        ("quantize", _step_quantize),
        ("benchmark", _step_benchmark),
        ("local plan", _step_local_plan),
        ("cloud plan", _step_cloud_plan),
    ]
    for index, (name, function) in enumerate(steps, start=1):
        ui.step(index, name)
        started = time.monotonic()
        try:
            status, detail, outputs = function(options, out, summary, ui)
        except DemoStepFailed as exc:
            status, detail, outputs = "failed", str(exc), {}
            ui.warn(f"{name} failed: {exc}")
        record(name, status, time.monotonic() - started, detail, **outputs)
        if status == "failed" and name in ("tiny model", "quantize"):
            break  # nothing later can run without a model and its manifest
    ui.step(TOTAL_STEPS, "summary")
    summary.finished = utc_now_iso()
    save_model(summary, summary_path)
    return summary


# -- steps ------------------------------------------------------------------------------------------------------------


def _step_tiny_model(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI):
    from vlmopt.testing import TinyVlmSpec, build_tiny_vlm

    model_dir = out / "models" / "tiny-llava"
    existed = (model_dir / "config.json").exists() and not options.force
    build_tiny_vlm(model_dir, TinyVlmSpec(seed=0), overwrite=options.force)
    ui.info(f"tiny LLaVA (random weights, 16 image tokens per 56x56 image) {'kept' if existed else 'built'} in "
            f"{model_dir}")
    return ("skipped" if existed else "done"), "", {"model_dir": str(model_dir)}


def _step_quantize(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI):
    from vlmopt.quantize.errors import QuantizeInputError
    from vlmopt.quantize.recipes import parse_methods
    from vlmopt.quantize.runner import QuantizeRequest, run_quantize

    model_dir = out / "models" / "tiny-llava"
    request = QuantizeRequest(model_dir=model_dir, methods=parse_methods(options.methods), out_dir=out / "variants",
                              samples=options.calib_samples, max_seq_len=256, force=options.force)
    try:
        result = run_quantize(request, lambda variant, stage: ui.info(f"{variant}: {stage}"))
    except QuantizeInputError as exc:
        raise DemoStepFailed(str(exc)) from None
    summary.manifest = str(result.manifest_path)
    for outcome in result.outcomes:
        ui.info(f"{outcome.name}: {outcome.status}{' - ' + outcome.message if outcome.message else ''}")
    bad = [o.name for o in result.outcomes if o.status in ("rejected", "failed")]
    detail = f"rejected or failed: {', '.join(bad)}" if bad else ""
    return "done", detail, {"manifest": str(result.manifest_path)}


def _step_benchmark(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI):
    if options.skip_benchmark:
        return "skipped", "--skip-benchmark", {}
    if summary.manifest is None:
        raise DemoStepFailed("no manifest from the quantize step")
    from vlmopt.bench.arrivals import LoadSpec
    from vlmopt.bench.device import detect_device
    from vlmopt.bench.runner import BenchOptions, record_unservable
    from vlmopt.bench.schedule import run_targets
    from vlmopt.bench.support import unservable_reason
    from vlmopt.bench.targets import from_manifest

    bench_options = BenchOptions(
        input_tokens=options.input_tokens,
        output_tokens=options.output_tokens,
        loads=[LoadSpec("concurrency", max_concurrency=c) for c in options.concurrency],
        slo=dict(options.local_slo),
        num_prompts=options.num_prompts,
        warmup=2,
        out_dir=out / "profiles",
        max_model_len=1024,
        max_num_seqs=max(options.concurrency),
        resume=not options.force,
    )
    servable = []
    device = None
    for target in from_manifest(Path(summary.manifest), None):
        reason = unservable_reason(target.scheme)
        if reason:
            # Recorded like `vlmopt benchmark` does, so the local plan treats the variant as infeasible here.
            device = device or detect_device()
            record = record_unservable(target, bench_options, device, reason)
            summary.unserved_variants[target.variant] = reason
            summary.unservable_records.append(str(record))
            ui.warn(f"{target.variant}: not benchmarked here: {reason} (recorded in {record})")
        else:
            servable.append(target)
    results = run_targets(servable, bench_options, lambda target: ui.bench_progress())
    summary.profiles.extend(str(path) for path in results.written)
    failures = [f"{failure.target.variant}: {failure.message}" for failure in results.failures]
    for line in failures:
        ui.warn(f"benchmark failed: {line}")
    if not summary.profiles:
        raise DemoStepFailed("no variant could be benchmarked: " + "; ".join(failures))
    detail = "; ".join(failures)
    return "done", detail, {"profiles_dir": str(out / "profiles")}


def _step_local_plan(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI):
    if not summary.profiles or summary.manifest is None:
        return "skipped", "no measured profiles", {}
    plan_path, report_path = plan_local_device(options, out, summary, ui)
    summary.local_plan, summary.local_report = str(plan_path), str(report_path)
    return "done", "", {"plan": str(plan_path), "report": str(report_path)}


def _step_cloud_plan(options: DemoOptions, out: Path, summary: DemoSummary, ui: DemoUI):
    plan_path, report_path = plan_cloud(options, out, ui)
    summary.cloud_plan, summary.cloud_report = str(plan_path), str(report_path)
    return "done", "", {"plan": str(plan_path), "report": str(report_path)}
