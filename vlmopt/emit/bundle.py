"""Write a whole deploy bundle atomically (vlmopt.atomic): every emitter's files go to a staging folder beside the
target, which replaces it in one rename. On any error nothing is written and an existing bundle stays as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from vlmopt.atomic import FolderNotOursError, atomic_folder, replaceable
from vlmopt.schemas import GpuCatalog, Plan, save_model
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, EmitError
from .clusters import Cluster, build_clusters
from .gateway import emit_cluster_gateway
from .grafana import emit_grafana
from .kubernetes import emit_cluster_kubernetes
from .mig_parted import emit_mig_parted, load_catalog
from .nginx import emit_nginx
from .node_pools import emit_cluster_node_pools
from .paths import assert_no_machine_paths, portable_plan
from .placement import check_placement
from .prometheus import emit_cluster_monitoring, emit_prometheus
from .readme import readme
from .secrets import assert_no_secret_values, redact_plan
from .skypilot import emit_skypilot
from .triton import emit_triton
from .vllm_args import emit_vllm_args
from .weights import emit_weights

PLAN_FILE = "plan.json"
README_FILE = "README.md"
# Marks a folder vlmopt wrote, so an existing folder is only ever replaced when it is a previous bundle.
MARKER_FILE = ".vlmopt-bundle.json"


def cluster_files(plan: Plan, cluster: Cluster, settings: DeploySettings, catalog: GpuCatalog) -> dict[str, str]:
    """One Kubernetes cluster's folder: node pools, GPU operator, workloads, autoscaling, gateway, monitoring."""
    return {
        **emit_cluster_node_pools(cluster, plan, catalog, settings),
        **emit_cluster_kubernetes(plan, cluster, settings, catalog),
        **emit_cluster_gateway(plan, cluster, settings),
        **emit_cluster_monitoring(plan, cluster, settings),
    }


def emit_all(
    plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS, catalog: GpuCatalog | None = None
) -> dict[str, str]:
    """Every emitted file (relative path -> text) except plan.json and the README; raises EmitError on the first
    problem, including a pod the placement check finds unschedulable on the node pools the bundle defines."""
    catalog = catalog if catalog is not None else load_catalog()
    clusters = build_clusters(plan, settings)
    emitters: list[Callable[[], dict[str, str]]] = [
        lambda: emit_vllm_args(plan, settings),
        lambda: emit_mig_parted(plan, settings, catalog),
        *(lambda c=c: cluster_files(plan, c, settings, catalog) for c in clusters),
        lambda: emit_weights(plan, clusters),
        lambda: emit_skypilot(plan, settings),
        lambda: emit_nginx(plan, settings),
        lambda: emit_prometheus(plan, settings),
        lambda: emit_grafana(plan),
        lambda: emit_triton(plan, settings),
    ]
    files: dict[str, str] = {}
    for emit in emitters:
        for path, text in emit().items():
            _check_relative(path)
            if path in files or path in (PLAN_FILE, README_FILE, MARKER_FILE):
                raise EmitError(f"two emitters produce {path}")
            files[path] = text
    problems = [p for p in check_placement(files, catalog) if p.severity == "error"]
    if problems:
        raise EmitError("placement check: " + "; ".join(p.message for p in problems[:5]))
    return files


def _check_relative(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise EmitError(f"emitted path {path!r} is not a plain relative path")


def write_bundle(
    plan: Plan,
    out_dir: Path,
    settings: DeploySettings | None = None,
    catalog: GpuCatalog | None = None,
) -> list[Path]:
    """Emit every target for `plan` into `out_dir` (replacing a previous bundle there); returns the files written.

    `settings`: the deploy settings (workload `deploy:` block or `--deploy-settings`); None = defaults."""
    out_dir = Path(out_dir)
    settings = settings if settings is not None else DEFAULT_SETTINGS
    if not replaceable(out_dir, (MARKER_FILE,)):
        raise EmitError(f"{out_dir}: exists and is not a vlmopt bundle (no {MARKER_FILE}); choose another --out")
    catalog = catalog if catalog is not None else load_catalog()
    safe_plan, machine_paths = portable_plan(redact_plan(plan))
    files = emit_all(safe_plan, settings, catalog)
    files[README_FILE] = readme(safe_plan, [PLAN_FILE, *files], settings, build_clusters(safe_plan, settings))
    plan_text = json.dumps(safe_plan.model_dump(mode="json"), indent=2) + "\n"
    assert_no_secret_values({**files, PLAN_FILE: plan_text})
    assert_no_machine_paths({**files, PLAN_FILE: plan_text}, machine_paths)

    written = sorted([PLAN_FILE, *files])
    try:
        with atomic_folder(out_dir, (MARKER_FILE,), "vlmopt bundle") as staging:
            save_model(safe_plan, staging / PLAN_FILE)
            for rel, text in files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                if rel.endswith(".sh"):
                    target.chmod(0o755)
            (staging / MARKER_FILE).write_text(json.dumps({"plan": plan.name, "files": written}, indent=2) + "\n")
    except FolderNotOursError as exc:  # a folder appeared at out_dir while the emitters ran
        raise EmitError(str(exc)) from None
    return [out_dir / rel for rel in written]
