"""Compose a campaign: targets -> jobs -> Kubernetes Jobs or SkyPilot tasks, cost estimate, campaign.json; checked
(strict schemas in the tests, the placement check here, no secrets) and written atomically. Nothing here talks to
a cluster: `submit.py` does, when the user asks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import vlmopt
from vlmopt.atomic import FolderNotOursError, write_folder
from vlmopt.emit._common import k8s_name
from vlmopt.emit.placement import check_placement
from vlmopt.emit.secrets import assert_no_secret_values
from vlmopt.emit.weights import upload_commands, weight_source
from vlmopt.schemas.campaign import CampaignJob, CampaignManifest, ResultsLocation
from vlmopt.schemas.catalog import GpuCatalog, PriceCatalog
from vlmopt.schemas.common import ContractError, load_model, utc_now_iso
from vlmopt.schemas.deploy import DeploySettings
from vlmopt.schemas.manifest import VariantManifest
from vlmopt.schemas.plan import Plan

from . import command as cmd
from .cost import estimate_job, startup
from .kubernetes import JobSpec, emit_campaign_kubernetes, manifest_for_jobs
from .skypilot import emit_campaign_skypilot, launch_command
from .targets import catalog_targets, plan_targets, weights_gib

CAMPAIGN_FILE = "campaign.json"
README_FILE = "README.md"
INPUTS_DIR = "inputs"
PROFILES_DIR = "profiles"
RESULTS_DIR = "results"
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class CampaignRequest:
    name: str
    manifest_path: Path
    out_dir: Path
    engine: str
    results: str
    bench: cmd.BenchmarkSettings
    gpu_catalog: GpuCatalog
    prices: PriceCatalog
    prices_label: str
    targets: list[str] = field(default_factory=list)
    from_plan: Path | None = None
    within_percent: float = 10.0
    variants: list[str] | None = None
    market: str = "on_demand"
    cloud: str | None = None
    region: str | None = None
    settings: DeploySettings = field(default_factory=DeploySettings)
    install: str = field(default_factory=cmd.default_install)
    serve_python: str = cmd.IMAGE_PYTHON
    startup_minutes: float | None = None
    point_seconds: float | None = None


@dataclass
class Campaign:
    manifest: CampaignManifest
    files: dict[str, str]
    notes: list[str]


def parse_results(text: str, name: str, engine: str) -> ResultsLocation:
    """`pvc:CLAIM` (Kubernetes), `s3://bucket/prefix` or `gs://bucket/prefix`; the campaign's name is the folder."""
    if text.startswith("pvc:"):
        claim = text[4:]
        if engine != "kubernetes":
            raise ContractError(f"--results {text}: a PVC is a Kubernetes volume; SkyPilot jobs need a bucket "
                                "(s3://... or gs://...)")
        if not _CLAIM.match(claim) or len(claim) > 253:
            raise ContractError(f"--results {text}: {claim!r} is not a PersistentVolumeClaim name")
        return ResultsLocation(kind="pvc", claim=claim, prefix=name)
    match = re.match(r"^(s3|gs)://[a-z0-9][a-z0-9._-]*(/[^\s]*)?$", text)
    if not match:
        raise ContractError(f"--results {text!r}: give pvc:CLAIM, s3://bucket/prefix or gs://bucket/prefix")
    return ResultsLocation(kind=match.group(1), uri=text.rstrip("/"), prefix=name)


def model_ref(path: Path, base: Path) -> str:
    """A checkpoint folder as a plan names it: relative to the folder vlmopt runs in when inside it (symbolic links
    kept as the user laid them out), else absolute."""
    absolute, here = Path(os.path.abspath(path)), Path(os.path.abspath(base))
    if absolute.is_relative_to(here):
        return absolute.relative_to(here).as_posix()
    return str(absolute)


def _portable_base_model(base_model: str) -> str:
    """A local base model path keeps only its folder name in the jobs' manifest (profiles are named after it)."""
    return Path(base_model).name if (base_model.startswith(("/", ".")) or Path(base_model).exists()) else base_model


def job_name(campaign: str, variant: str, gpu: str, slice_name: str) -> str:
    return k8s_name(campaign, variant, gpu, "" if slice_name == "whole" else slice_name)


def _select_variants(manifest: VariantManifest, wanted: list[str] | None, path: Path) -> list[str]:
    names = [v.name for v in manifest.variants]
    if not wanted:
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ContractError(f"{path}: --variant {unknown[0]!r} not in the manifest (have {', '.join(names)})")
    return [n for n in names if n in wanted]


def plan_campaign(req: CampaignRequest) -> Campaign:
    """Everything the campaign folder holds, computed and checked; raises ContractError on bad input."""
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", req.name) or len(req.name) > 40:
        raise ContractError(f"--name {req.name!r}: lower-case letters, digits and '-', starting with a letter, "
                            "at most 40 characters (it names Kubernetes objects)")
    manifest = load_model(VariantManifest, req.manifest_path)
    variants = _select_variants(manifest, req.variants, req.manifest_path)
    results = parse_results(req.results, req.name, req.engine)
    if req.from_plan is not None:
        if req.targets:
            raise ContractError("--target and --from-plan are exclusive")
        plan = load_model(Plan, req.from_plan)
        planned, notes = plan_targets(plan, str(req.from_plan), req.within_percent, variants, manifest,
                                      req.gpu_catalog, req.prices, req.market, req.cloud, req.region, req.engine)
    elif req.targets:
        planned, notes = catalog_targets(req.targets, variants, manifest, req.gpu_catalog, req.prices, req.market,
                                         req.cloud, req.region, req.engine)
        if not planned:
            raise ContractError("no job left to run: " + "; ".join(notes))
    else:
        raise ContractError("give --target GPU[:SLICE] (repeatable) or --from-plan plan.json")

    cwd = Path.cwd()
    models = {v.name: model_ref(req.manifest_path.parent / v.path, cwd) for v in manifest.variants}
    startup_s, startup_prov = startup(req.startup_minutes)
    jobs: list[JobSpec] = []
    entries: list[CampaignJob] = []
    seen: set[str] = set()
    for p in planned:
        name = job_name(req.name, p.variant, p.target.gpu, p.target.slice)
        if name in seen:
            continue
        seen.add(name)
        gpu = req.gpu_catalog.get(p.target.gpu)
        estimate = estimate_job(req.bench, p.target, gpu, req.prices, req.prices_label, startup_s, startup_prov,
                                req.point_seconds)
        run_s = estimate.startup_s + estimate.points * estimate.point_s
        argv = cmd.job_argv(p.variant, req.bench)
        jobs.append(JobSpec(name, p.variant, models[p.variant], weights_gib(manifest, p.variant), p.target, argv,
                            run_s))
        entries.append(CampaignJob(name=name, variant=p.variant, target=p.target, file="", command=argv,
                                   estimate=estimate))
    _check_weights_reachable(jobs, req.settings, req.engine)
    if any(j.target.slice != "whole" for j in jobs) and not _pins_batch_limits(req.bench.args):
        notes.append("MIG targets without --max-num-seqs and --server-arg --max-num-batched-tokens=N: inside a MIG "
                     "container vLLM cannot query the parent GPU and falls back to small-GPU batch defaults "
                     "(vllm-project/vllm#55381); the deploy bundle pins both on MIG, so measure with the values it "
                     "will use")

    job_manifest = manifest.model_dump(mode="json")
    job_manifest["base_model"] = _portable_base_model(manifest.base_model)
    manifest_text = manifest_for_jobs(job_manifest, models)
    files: dict[str, str] = {f"{INPUTS_DIR}/{cmd.MANIFEST_FILE}": manifest_text,
                             f"{INPUTS_DIR}/{cmd.WRAPPER_FILE}": cmd.wrapper_script()}
    if req.engine == "kubernetes":
        emitted, where = emit_campaign_kubernetes(req.name, jobs, manifest_text, req.gpu_catalog, req.settings,
                                                  results, req.install, req.serve_python)
        problems = [f for f in check_placement(emitted, req.gpu_catalog) if f.severity == "error"]
        if problems:
            raise ContractError("placement check: " + "; ".join(f"{f.where}: {f.message}" for f in problems[:5]))
        for entry in entries:
            entry.cluster, entry.file = where[entry.name]
    else:
        out = req.out_dir.resolve()
        local = {j.name: Path(os.path.relpath(Path(models[j.variant]).resolve(), out)).as_posix() for j in jobs}
        emitted, paths = emit_campaign_skypilot(req.name, jobs, req.settings, results, req.install,
                                                req.serve_python, local)
        for entry in entries:
            entry.file = paths[entry.name]
    files.update(emitted)
    uploads = upload_commands(list({w.model: w for w in (
        weight_source(j.model, j.target.cloud, req.settings) for j in jobs)}.values()))
    if uploads:
        files["weights/upload.sh"] = "\n".join([
            "#!/bin/sh", f"# generated by vlmopt benchmark campaign ({req.name}): copy the local checkpoints to "
            "their buckets before the jobs start.", "# Run from the folder `vlmopt benchmark campaign` ran in.",
            "set -eu", *(shlex.join(c) for c in uploads)]) + "\n"

    hours = sum(e.estimate.gpu_hours for e in entries)
    priced = [e.estimate.usd for e in entries]
    record = CampaignManifest(
        name=req.name, created=utc_now_iso(), vlmopt_version=vlmopt.__version__, engine=req.engine,
        variant_manifest=str(req.manifest_path), base_model=manifest.base_model, benchmark_args=req.bench.args,
        image=req.settings.image, namespace=req.settings.namespace if req.engine == "kubernetes" else None,
        results=results, vlmopt_install=req.install,
        from_plan=str(req.from_plan) if req.from_plan else None,
        within_percent=req.within_percent if req.from_plan else None,
        jobs=entries, expected_gpu_hours=round(hours, 4),
        expected_usd=None if any(u is None for u in priced) else round(sum(priced), 2), notes=notes,
    )
    files[README_FILE] = readme(record)
    assert_no_secret_values(files)
    return Campaign(record, files, notes)


def _pins_batch_limits(args: list[str]) -> bool:
    text = " ".join(args)
    return "--max-num-seqs" in text and "--max-num-batched-tokens" in text


def _check_weights_reachable(jobs: list[JobSpec], settings: DeploySettings, engine: str) -> None:
    """A local checkpoint with no bucket copy cannot reach a Kubernetes node (SkyPilot uploads it itself)."""
    if engine != "kubernetes":
        return
    for job in jobs:
        source = weight_source(job.model, job.target.cloud, settings)
        if source.kind == "missing":
            raise ContractError(
                f"{job.variant}: its checkpoint {job.model} is a local folder no node can read: set a bucket "
                "(--deploy-settings with storage.bucket.<cloud>, or models[<folder>] = s3://, gs:// or a hub id)")


def write_campaign(campaign: Campaign, out_dir: Path) -> Path:
    """The whole folder in one rename (vlmopt.atomic); only a previous campaign folder is ever replaced."""
    data = json.dumps(campaign.manifest.model_dump(mode="json"), indent=2) + "\n"
    files = {**campaign.files, CAMPAIGN_FILE: data}
    executable = [p for p in files if p.endswith(".sh")]
    try:
        return write_folder(out_dir, files, (CAMPAIGN_FILE,), "vlmopt campaign", executable=executable)
    except FolderNotOursError as exc:
        raise ContractError(str(exc)) from None


def save_campaign(record: CampaignManifest, folder: Path) -> None:
    from vlmopt.schemas.common import save_model

    save_model(record, folder / CAMPAIGN_FILE)


def load_campaign(folder: Path) -> CampaignManifest:
    return load_model(CampaignManifest, folder / CAMPAIGN_FILE)


def readme(record: CampaignManifest) -> str:
    """How to run the campaign by hand (what --submit does), and what each job costs."""
    lines = [f"# Benchmark campaign {record.name}", "",
             f"Variants of `{record.base_model}` ({record.variant_manifest}), engine **{record.engine}**, image "
             f"`{record.image}`; vlmopt inside the image: `{record.vlmopt_install}`. Results go to "
             f"`{record.results.root_uri()}/<job>/`. docs/benchmark.md#campaigns explains every file.", "",
             "| job | variant | target | market | why | points x s | GPU-hours | $ |",
             "|---|---|---|---|---|---|---|---|"]
    for job in record.jobs:
        e = job.estimate
        usd = "-" if e.usd is None else f"{e.usd:.2f}"
        lines.append(f"| {job.name} | {job.variant} | {job.target.label} | {job.target.market} | {job.target.why} | "
                     f"{e.points} x {e.point_s:.0f} | {e.gpu_hours:.3f} | {usd} |")
    total = "-" if record.expected_usd is None else f"${record.expected_usd:.2f}"
    first = record.jobs[0].estimate
    prices = sorted({j.estimate.price_provenance.label() for j in record.jobs if j.estimate.price_provenance})
    lines += ["", f"Expected: {record.expected_gpu_hours:.3f} GPU-hours, {total}.", "",
              f"- startup: {first.startup_provenance.label()}", f"- duration: {first.duration_provenance.label()}",
              *(f"- price: {p}" for p in prices or ["none in the catalog"]), "", "## Run", ""]
    if record.engine == "kubernetes":
        clusters = sorted({j.cluster for j in record.jobs if j.cluster})
        for key in clusters:
            lines += [f"Cluster `{key}` (node pools and the GPU operator first, as in the deploy bundle):", "",
                      "```sh", f"kubectl apply -f clusters/{key}/kubernetes/00-campaign.yaml"]
            lines += [f"kubectl apply -f {j.file}" for j in record.jobs if j.cluster == key]
            lines += ["```", ""]
    else:
        lines += ["From this folder, with HF_TOKEN exported when a checkpoint comes from the hub:", "", "```sh"]
        lines += [shlex.join(launch_command(j.name, j.file)) for j in record.jobs]
        lines += ["```", ""]
    lines += ["Or let vlmopt do it: `vlmopt benchmark campaign --resume <this folder> --submit`. Then:", "",
              "```sh", "vlmopt benchmark collect <this folder>", "vlmopt plan --profiles <this folder>/profiles ...",
              "```", ""]
    if record.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in record.notes), ""]
    return "\n".join(lines)
