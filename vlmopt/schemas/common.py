"""Shared pieces of every cross-stage file: versioning, provenance, atomic JSON/YAML I/O."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

ProvenanceKind = Literal["measured", "estimated", "catalog", "user"]


class StrictModel(BaseModel):
    """Base of every contract: unknown keys are errors, so a typo in a user's YAML is caught, not ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Provenance(StrictModel):
    """Where a figure came from. Every number a user sees carries one of these (or sits under one)."""

    kind: ProvenanceKind
    source: str = Field(description="measured: profile path/run id; estimated: model name; catalog: file + source")
    date: str | None = Field(default=None, description="ISO date of the measurement or of the catalog retrieval")
    detail: str | None = None

    def label(self) -> str:
        when = f", {self.date}" if self.date else ""
        return f"{self.kind} ({self.source}{when})"


class HubReference(StrictModel):
    """A model taken from the Hugging Face hub: which repo, and which commit of it was actually used."""

    repo_id: str = Field(description="e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    revision: str = Field(description="commit hash of the cached snapshot that was used")
    requested_revision: str | None = Field(default=None, description="branch, tag or commit asked for; None: main")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class ContractError(ValueError):
    """A file that crosses a stage boundary could not be read or is invalid; the message names file and field."""


M = TypeVar("M", bound=BaseModel)


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    parts = []
    for item in err.errors()[:5]:
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{loc}: {item['msg']}")
    more = f" (+{len(err.errors()) - 5} more)" if len(err.errors()) > 5 else ""
    return f"{path}: invalid: " + "; ".join(parts) + more


def load_model(model_cls: type[M], path: Path | str) -> M:
    """Read JSON or YAML into `model_cls`, raising ContractError with file and field names on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: file not found")
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(
            f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ContractError(format_validation_error(path, exc)) from exc


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write via a temp file in the same folder + rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(model: BaseModel, path: Path | str) -> Path:
    path = Path(path)
    data: Any = model.model_dump(mode="json")
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    return atomic_write_text(path, text)
