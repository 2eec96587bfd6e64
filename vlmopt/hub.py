"""Model references as users type them: a local folder, or a Hugging Face hub id (`Qwen/Qwen2.5-VL-7B-Instruct`,
optionally `@revision`) resolved to a folder through huggingface_hub's cache.

One job: turn what the user typed into a local folder plus, for a hub id, the id and the commit it resolved to (so
manifests and profiles can say exactly which weights were used). The environment is read at call time, as
huggingface_hub documents it (https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables):
`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) = cache only, never the network; `HF_HUB_CACHE` (legacy
`HUGGINGFACE_HUB_CACHE`), else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, is the cache folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlmopt.schemas.common import HubReference

# Weight formats a safetensors checkpoint duplicates (vlmopt and vLLM read safetensors), and the raw consolidated
# copies some repos ship next to the transformers layout (`original/`): never worth the download.
DOWNLOAD_IGNORE = ["*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.gguf",
                   "*.tflite", "original/*", "consolidated*.safetensors"]
# What counting tokens needs: configs, tokenizer files, chat templates; never the weights.
TOKENIZER_FILES = ["*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja", "tokenizer*"]

# namespace/name, as the hub spells it (huggingface_hub.utils.validate_repo_id), with an optional @revision. A bare
# name without a namespace is not taken as a hub id: too easy to confuse with a mistyped local folder.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})"
                     r"(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9_./-]{0,127}))?$")


class ModelNotFound(ValueError):
    """The reference is neither a local folder nor a hub id that could be resolved; the message is for the user."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: always a local folder; `hub` is set when it came from the hub's cache."""

    path: Path
    hub: HubReference | None = None

    @property
    def name(self) -> str:
        """What to call the model in output paths: the hub repo's name (not the snapshot's commit hash)."""
        return self.hub.repo_id.split("/")[-1] if self.hub else self.path.name

    @property
    def label(self) -> str:
        return f"{self.hub.repo_id}@{self.hub.revision[:12]}" if self.hub else str(self.path)


def is_offline() -> bool:
    return _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """`org/name[@revision]` -> (repo id, revision or None); None when the text cannot be a hub id."""
    match = _HUB_ID.match(text.strip())
    if not match:
        return None
    repo = match.group("repo")
    if "--" in repo or ".." in repo or repo.endswith((".git", ".", "-")):
        return None
    return repo, match.group("revision")


def looks_like_hub_id(text: str) -> bool:
    return parse_hub_id(text) is not None


def resolve_model(reference: str | Path, *, what: str = "model", files: Literal["model", "tokenizer"] = "model",
                  on_download: Callable[[str], None] | None = None) -> ModelRef:
    """A local folder as is; else a hub id through the cache (downloading unless offline). `what` names the
    argument in messages (e.g. "MODEL"); `files="tokenizer"` fetches only what counting tokens needs.
    `on_download(repo_id)` runs before a download may start.

    Raises ModelNotFound with one line for the user: a missing folder that is no hub id, a hub id missing from the
    cache while offline, a repo the hub does not have (or gates), an unknown revision, an incomplete snapshot."""
    text = str(reference).strip()
    path = Path(text).expanduser()
    if path.exists():
        return ModelRef(path.resolve())
    parsed = parse_hub_id(text)
    if parsed is None:
        raise ModelNotFound(f"{what} {text}: no such folder (and not a hub id of the form org/name)")
    repo_id, revision = parsed
    snapshot = _snapshot(repo_id, revision, what, files, on_download)
    if not (snapshot / "config.json").is_file():
        raise ModelNotFound(f"{what} {text}: the cached snapshot {snapshot} has no config.json (an incomplete "
                            "download?); fetch it again with network access, e.g. `hf download " + repo_id + "`")
    return ModelRef(snapshot, HubReference(repo_id=repo_id, revision=snapshot.name, requested_revision=revision))


def _snapshot(repo_id: str, revision: str | None, what: str, files: str,
              on_download: Callable[[str], None] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline()
    cache = hub_cache_dir()
    label = repo_id + (f"@{revision}" if revision else "")
    if not offline and on_download is not None:
        on_download(repo_id)
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=offline,
                                   ignore_patterns=DOWNLOAD_IGNORE,
                                   allow_patterns=TOKENIZER_FILES if files == "tokenizer" else None)
    except GatedRepoError:
        raise ModelNotFound(f"{what} {label}: the hub gates this repo; accept its terms on huggingface.co and set "
                            "HF_TOKEN (or `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{what} {label}: no such local folder, and the hub has no such repo (or it is "
                            "private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"{what} {label}: the hub repo has no revision {revision!r}") from None
    except LocalEntryNotFoundError as exc:
        # Newer huggingface_hub releases raise a subclass for a partial snapshot in the cache.
        if type(exc).__name__ == "IncompleteSnapshotError":
            raise ModelNotFound(f"{what} {label}: the cached snapshot in {cache} is incomplete and the hub cannot be "
                                "reached; fetch it again with network access") from None
        if offline:
            raise ModelNotFound(f"{what} {label}: no such local folder, and not in the hub cache {cache} while "
                                "HF_HUB_OFFLINE=1; download it first (`hf download " + repo_id + "`) or pass a "
                                "local folder") from None
        raise ModelNotFound(f"{what} {label}: no such local folder, not in the hub cache {cache}, and the hub "
                            "could not be reached") from None
    except HFValidationError as exc:
        raise ModelNotFound(f"{what} {label}: not a valid hub id ({str(exc).splitlines()[0]})") from None
    except OSError as exc:  # disk full, permissions on the cache folder
        raise ModelNotFound(f"{what} {label}: cannot use the hub cache {cache}: {exc}") from None
    return Path(folder)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE")
