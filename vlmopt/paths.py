"""Where vlmopt finds its bundled data (GPU and price catalogs, model architectures, workloads) and the serve env.

The data ships inside the package (`vlmopt/data/`, read through importlib.resources), so a wheel install plans as
well as a checkout does. A user data folder laid out the same way (`--data-dir DIR` on `plan`, `gpus` and `demo`,
or `$VLMOPT_DATA_DIR`) overrides it file by file: `DIR/prices.yaml` replaces the bundled price catalog,
`DIR/models/my-vlm.yaml` adds a model, and every file the folder lacks still comes from the package
(docs/setup.md#bundled-data-and-your-own).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from importlib import resources
from pathlib import Path

from vlmopt.schemas.common import ContractError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR_ENV = "VLMOPT_DATA_DIR"

# Set by a command's --data-dir for the rest of the process; wins over $VLMOPT_DATA_DIR.
_data_dir_option: Path | None = None


@functools.cache
def bundled_data_dir() -> Path:
    """The package's own data folder (`vlmopt/data` in the installed package)."""
    root = resources.files("vlmopt") / "data"
    if isinstance(root, Path):
        return root
    # A zipped install: extract the folder once for this process (as_file takes folders from Python 3.12 on).
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    return Path(stack.enter_context(resources.as_file(root)))


def set_data_dir(folder: Path | None) -> None:
    """Use `folder` (a command's --data-dir) over $VLMOPT_DATA_DIR from now on; None goes back to the environment."""
    global _data_dir_option
    if folder is not None and not Path(folder).is_dir():
        raise ContractError(f"--data-dir {folder}: not a folder")
    _data_dir_option = Path(folder) if folder is not None else None


def user_data_dir() -> Path | None:
    """The user's data folder (--data-dir, else $VLMOPT_DATA_DIR), or None when only the bundled data is used."""
    if _data_dir_option is not None:
        return _data_dir_option
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ContractError(f"${DATA_DIR_ENV}={value}: not a folder")
    return folder


def data_file(relative: str | Path) -> Path:
    """`relative` (e.g. 'prices.yaml', 'workloads/default.yaml') from the user's data folder when it has it, else
    from the bundled data. The bundled path is returned even when missing, so the caller's error names it."""
    user = user_data_dir()
    if user is not None and (user / relative).exists():
        return user / relative
    return bundled_data_dir() / relative


def data_files(folder: str, pattern: str = "*.yaml") -> dict[str, Path]:
    """Files matching `pattern` in a data sub-folder (e.g. 'models'), by stem; the user's copy wins over a bundled
    file of the same name."""
    found: dict[str, Path] = {}
    user = user_data_dir()
    for root in (bundled_data_dir(), user):
        if root is not None and (root / folder).is_dir():
            found.update({path.stem: path for path in sorted((root / folder).glob(pattern))})
    return dict(sorted(found.items()))


def data_label(path: Path | str) -> str:
    """A data file's name for provenance: `vlmopt/data/<file>` for a bundled file (the same on every install),
    else the path as given."""
    try:
        return f"vlmopt/data/{Path(path).resolve().relative_to(bundled_data_dir().resolve()).as_posix()}"
    except ValueError:
        return str(path)


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
