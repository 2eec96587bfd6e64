"""A pre-filled Hugging Face hub cache for tests, laid out as huggingface_hub writes it
(https://huggingface.co/docs/huggingface_hub/guides/manage-cache): models--org--name/blobs/<sha256> holding the
bytes, snapshots/<commit>/<file> symlinks to them, refs/main holding the commit. No network involved."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def fill_hub_cache(cache: Path, repo_id: str, files_from: Path, commit: str | None = None,
                   ref: str = "main") -> Path:
    """Copy every file of `files_from` into `cache` as snapshot `commit` of `repo_id`; returns the snapshot folder."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in sorted(p for p in files_from.rglob("*") if p.is_file()):
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / source.relative_to(files_from)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
