"""Where each checkpoint comes from and the command that puts it under /models before vLLM starts.

Sources, in order: the settings' `models` map (hub id, s3:// or gs:// URI), a hub id as the plan names it, a local
folder uploaded to the settings' per-cloud `storage.bucket`. A local folder with none of these cannot reach a
cluster: its pods stop in their init step with a message naming the setting (docs/deploy-bundle.md#weights).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from vlmopt.schemas.deploy import DeploySettings

from ._common import MODELS_MOUNT
from .groups import is_hub_model_id, model_dir_name

COMPLETE_MARKER = ".vlmopt-complete"
# Images that carry the copy tools (pinned): the vLLM image ships huggingface_hub's `hf`; the cloud CLIs come from
# their vendors' images.
AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.27.0"
GCLOUD_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:528.0.0-slim"

SourceKind = Literal["hub", "s3", "gs", "missing"]


@dataclass(frozen=True)
class WeightSource:
    model: str  # as the plan names it
    kind: SourceKind
    uri: str  # hub id or bucket URI ('' when missing)
    local_folder: str | None  # set when the plan names a local folder (what weights/upload.sh copies)

    @property
    def container_dir(self) -> str:
        return f"{MODELS_MOUNT}/{model_dir_name(self.model)}"

    @property
    def marker(self) -> str:
        return f"{self.container_dir}/{COMPLETE_MARKER}"


def weight_source(model: str, cloud: str | None, settings: DeploySettings) -> WeightSource:
    local = None if is_hub_model_id(model) else model
    source = settings.models.get(model)
    if source is None and local is None:
        source = model
    if source is None and cloud in settings.storage.bucket:
        source = settings.storage.bucket[cloud].rstrip("/") + "/" + model_dir_name(model)
    if source is None:
        return WeightSource(model, "missing", "", local)
    if source.startswith("s3://"):
        return WeightSource(model, "s3", source, local)
    if source.startswith("gs://"):
        return WeightSource(model, "gs", source, local)
    return WeightSource(model, "hub", source.removeprefix("hf://"), local)


def fetch_step(source: WeightSource, image: str) -> tuple[str, list[str]]:
    """(image, command) that fills source.container_dir and then writes the completion marker; idempotent."""
    target = source.container_dir
    if source.kind == "hub":
        copy = ["hf", "download", source.uri, "--local-dir", target]
        tool_image = image
    elif source.kind == "s3":
        copy = ["aws", "s3", "sync", "--no-progress", source.uri, target]
        tool_image = AWS_CLI_IMAGE
    elif source.kind == "gs":
        copy = ["gcloud", "storage", "rsync", "--recursive", source.uri, target]
        tool_image = GCLOUD_IMAGE
    else:
        message = (
            f"{source.model} is a local folder and no copy of it is reachable from the cluster: set deploy.models"
            f"[{source.model!r}] to an s3://, gs:// URI or hub id, or deploy.storage.bucket, and re-run vlmopt plan"
        )
        return image, ["sh", "-c", f"echo {shlex.quote(message)} >&2; exit 1"]
    script = (
        f"test -f {shlex.quote(source.marker)} || "
        f"({shlex.join(copy)} && touch {shlex.quote(source.marker)})"
    )
    return tool_image, ["sh", "-c", script]


def wait_step(source: WeightSource) -> list[str]:
    """Shared volume: wait until the download Job has written the marker (the Job may still be running)."""
    marker = shlex.quote(source.marker)
    return ["sh", "-c", f"until test -f {marker}; do echo waiting for {marker}; sleep 10; done"]


def upload_commands(sources: list[WeightSource]) -> list[list[str]]:
    """Commands that copy local model folders to their bucket (run where `vlmopt quantize` wrote them)."""
    commands = []
    for s in sources:
        if s.local_folder is None:
            continue
        if s.kind == "s3":
            commands.append(["aws", "s3", "sync", s.local_folder, s.uri])
        elif s.kind == "gs":
            commands.append(["gcloud", "storage", "rsync", "--recursive", s.local_folder, s.uri])
    return commands


def emit_weights(plan, clusters) -> dict[str, str]:
    """weights/sources.yaml (every checkpoint per cluster and where it comes from) and weights/upload.sh when local
    folders go to a bucket first."""
    from ._common import GENERATED_BY, dump_yaml

    table = {
        c.key: [
            {"model": w.model, "source": w.kind, "uri": w.uri, "container_path": w.container_dir} for w in c.weights
        ]
        for c in clusters
    }
    files = {
        "weights/sources.yaml": dump_yaml(
            {"clusters": table}, header=[f"{GENERATED_BY} ({plan.name}): where each cluster's checkpoints come from"]
        )
    }
    uploads: list[list[str]] = []
    for c in clusters:
        for command in upload_commands(c.weights):
            if command not in uploads:
                uploads.append(command)
    if uploads:
        lines = [
            "#!/bin/sh",
            f"# {GENERATED_BY} ({plan.name}): copy the local checkpoints to their buckets.",
            "# Run from the folder `vlmopt plan` ran in (the paths are relative to it).",
            "set -eu",
            *(shlex.join(c) for c in uploads),
        ]
        files["weights/upload.sh"] = "\n".join(lines) + "\n"
    return files
