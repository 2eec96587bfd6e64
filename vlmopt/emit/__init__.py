"""Deploy-bundle emitters: a Plan in, deployable files out (docs/deploy-bundle.md).

Each target module exposes `emit_<target>(plan, ...) -> dict[str, str]` (relative path -> file text), built from
data structures and serialised with yaml/json, never from string templates. `write_bundle` runs them all and
writes the bundle atomically.
"""

from ._common import EmitError, EmitSettings
from .bundle import emit_all, write_bundle
from .grafana import emit_grafana
from .kubernetes import emit_kubernetes
from .mig_parted import emit_mig_parted
from .nginx import emit_nginx
from .prometheus import emit_prometheus
from .skypilot import emit_skypilot
from .triton import emit_triton
from .vllm_args import emit_vllm_args

__all__ = [
    "EmitError",
    "EmitSettings",
    "emit_all",
    "emit_grafana",
    "emit_kubernetes",
    "emit_mig_parted",
    "emit_nginx",
    "emit_prometheus",
    "emit_skypilot",
    "emit_triton",
    "emit_vllm_args",
    "write_bundle",
]
