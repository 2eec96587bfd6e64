"""Where vlmopt finds its bundled data and the serve environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def profiles_dir() -> Path:
    """Bundled data: gpus.yaml, prices.yaml, models/*.yaml, workloads/*.yaml. Override with VLMOPT_PROFILES_DIR."""
    override = os.environ.get("VLMOPT_PROFILES_DIR")
    return Path(override) if override else REPO_ROOT / "profiles"


def serve_python() -> Path | None:
    """The serve env's interpreter: $VLMOPT_SERVE_PYTHON, else <repo>/.venv-serve/bin/python, else None."""
    override = os.environ.get("VLMOPT_SERVE_PYTHON")
    if override:
        return Path(override)
    candidates = [REPO_ROOT / ".venv-serve" / "bin" / "python", Path.cwd() / ".venv-serve" / "bin" / "python"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def main_python() -> Path:
    return Path(sys.executable)
