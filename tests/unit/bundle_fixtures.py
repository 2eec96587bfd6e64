"""Bundles the emitter tests read: settings that make the fixture plans deployable, and helpers to read files."""

from __future__ import annotations

from typing import Any

import yaml

from vlmopt.emit import emit_all
from vlmopt.schemas.deploy import DeploySettings

# The fixture plans name a local checkpoint folder (DOCS_MODEL): a bucket per cloud makes it reachable.
BUCKETS = {"aws": "s3://vlmopt-test-models/qwen", "gcp": "gs://vlmopt-test-models/qwen"}


def settings(**fields: Any) -> DeploySettings:
    storage = {"bucket": BUCKETS, **fields.pop("storage", {})}
    return DeploySettings.model_validate({"storage": storage, **fields})


def emit(plan, **fields: Any) -> dict[str, str]:
    return emit_all(plan, settings(**fields))


def documents(files: dict[str, str], prefix: str = "clusters/") -> list[tuple[str, dict]]:
    return [
        (path, doc)
        for path, text in sorted(files.items())
        if path.startswith(prefix) and path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if isinstance(doc, dict) and "kind" in doc
    ]


def by_kind(files: dict[str, str], kind: str, prefix: str = "clusters/") -> list[dict]:
    return [d for _, d in documents(files, prefix) if d["kind"] == kind]


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None
