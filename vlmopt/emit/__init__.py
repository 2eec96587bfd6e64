"""Deploy-bundle emitters: a Plan and its deploy settings in, deployable files out (docs/deploy-bundle.md).

Each target module exposes `emit_<target>(plan, settings, ...) -> dict[str, str]` (relative path -> file text),
built from data structures and serialised with yaml/json, never from string templates. Kubernetes targets are
emitted per cluster (one per cloud and region, `clusters.py`). `write_bundle` runs them all, checks placement,
secrets and paths, and writes the bundle atomically.
"""

from vlmopt.schemas.deploy import DeploySettings

from ._common import EmitError
from .bundle import cluster_files, emit_all, write_bundle
from .grafana import emit_grafana
from .mig_parted import emit_mig_parted
from .nginx import emit_nginx
from .prometheus import emit_prometheus
from .skypilot import emit_skypilot
from .triton import emit_triton
from .vllm_args import emit_vllm_args

__all__ = [
    "DeploySettings",
    "EmitError",
    "cluster_files",
    "emit_all",
    "emit_grafana",
    "emit_mig_parted",
    "emit_nginx",
    "emit_prometheus",
    "emit_skypilot",
    "emit_triton",
    "emit_vllm_args",
    "write_bundle",
]
