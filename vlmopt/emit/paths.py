"""No machine paths in a bundle: a plan names local folders (checkpoints, profiles, the workload) by where they lay
on the planning machine; the bundle and its plan.json name them relative to the folder `vlmopt plan` ran in, so
the bundle reads the same on any machine and leaks nothing about the one that made it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmopt.schemas import Plan

from ._common import EmitError

# An absolute POSIX path of two or more parts, not inside a URL ("http://x/y") or a longer token.
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+-]+/)+[\w.@+-]*")
# Paths that name places inside containers or URLs the bundle means literally.
CONTAINER_ROOTS = ("/models/", "/dev/", "/tmp/", "/etc/", "/health", "/metrics", "/v1/", "/usr/", "/bin/")


def _relative(path: str, base: str) -> str:
    """Relative to the planning folder when inside it; else only the last two parts ('.../profiles/prices.yaml')."""
    rel = os.path.relpath(path, base)
    if rel == ".":
        return "./"
    if not rel.startswith(".."):
        return rel
    parts = [p for p in path.split("/") if p]
    return ".../" + "/".join(parts[-2:])


def _portable(value: Any, base: str, found: set[str]) -> Any:
    if isinstance(value, str):
        # Every absolute path in a plan is the planning machine's: container paths only appear in emitted files.
        def swap(match: re.Match[str]) -> str:
            path = match.group(0)
            found.add(path.rstrip("/"))
            return _relative(path, base)

        return _ABSOLUTE.sub(swap, value)
    if isinstance(value, dict):
        return {k: _portable(v, base, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, base, found) for v in value]
    return value


def portable_plan(plan: Plan, base: Path | None = None) -> tuple[Plan, set[str]]:
    """The plan with every absolute path made relative to `base` (the current folder), and the paths replaced."""
    found: set[str] = set()
    data = _portable(plan.model_dump(mode="json"), str(base or Path.cwd()), found)
    return Plan.model_validate(data), found


def assert_no_machine_paths(files: Mapping[str, str], replaced: set[str], base: Path | None = None) -> None:
    """Refuse a bundle in which the planning machine's folders (cwd, home, or a path the plan named) appear."""
    needles = {str(base or Path.cwd()), str(Path.home()), *replaced}
    # A machine folder that is itself a container path (/tmp as the current folder) cannot be told apart.
    needles = {n for n in needles if len(n) > 1 and not any(r.rstrip("/") == n.rstrip("/") for r in CONTAINER_ROOTS)}
    for path, text in files.items():
        for needle in needles:
            for match in re.finditer(re.escape(needle), text):
                end = match.end()
                if end == len(text) or not (text[end].isalnum() or text[end] in "_-."):
                    raise EmitError(f"{path}: contains the machine path {needle!r}; refusing to write")
