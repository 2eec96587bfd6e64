"""The wheel is a working install: it carries every bundled data file, and `vlmopt plan` / `vlmopt gpus` run from a
fresh virtual environment outside the source tree.

How the fresh venv gets its dependencies (fair and fast): `pip install` of the wheel from the registry costs about
3 minutes on a 2-core machine (numpy, scipy, pandas, matplotlib: ~490 MB). Instead the venv is created without
system site-packages, the wheel is installed into it with `--no-deps`, and a `.pth` file adds a folder holding
links to exactly the distributions the wheel's `Requires-Dist` names (followed transitively, markers evaluated), as
the test environment has them installed. `pip check` in the venv then proves every declared dependency is present at
an accepted version. The venv therefore sees the wheel's own files and its declared dependency closure, nothing
else: not the source tree, not the editable install, not torch or llm-compressor. A module the package imports
without declaring it fails here as it would for a user. Set VLMOPT_TEST_WHEEL_FROM_REGISTRY=1 to install the
dependencies from the package registry instead (what a user's `pip install vlmopt-*.whl` does; needs network).

The wheel is built with `pip wheel --no-deps --no-build-isolation --no-index` from a copy of the sources, so the build
needs no network (setuptools and wheel come from the test environment, `dev` extra) and no stale `build/` folder
of the checkout can leak files into it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
FROM_REGISTRY = os.environ.get("VLMOPT_TEST_WHEEL_FROM_REGISTRY") == "1"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "vlmopt", source / "vlmopt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(source)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("vlmopt-*.whl")
    return built


def test_wheel_carries_every_bundled_data_file(wheel: Path) -> None:
    data_root = REPO_ROOT / "vlmopt" / "data"
    expected = {f"vlmopt/data/{p.relative_to(data_root).as_posix()}" for p in data_root.rglob("*") if p.is_file()}
    assert {"vlmopt/data/gpus.yaml", "vlmopt/data/prices.yaml", "vlmopt/data/workloads/default.yaml"} <= expected
    assert any(name.startswith("vlmopt/data/models/") for name in expected)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected - names == set(), "bundled data missing from the wheel"
    # the measured-profile and report examples are the checkout's, not the package's
    assert not any(name.startswith(("profiles/", "reports/", "tests/")) for name in names)


def _dependency_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `requirements` pull in, transitively (environment markers evaluated, no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (a dependency of the wheel) is not installed in the test environment")
        seen[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return list(seen.values())


def _link_dependencies(wheel: Path, into: Path) -> int:
    """Link the top-level entries (packages, modules, .libs, .dist-info) of the wheel's dependency closure."""
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = archive.read(meta_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    closure = _dependency_closure([r for r in requires if "extra ==" not in r])
    into.mkdir()
    for dist in closure:
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            link = into / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)
    return len(closure)


def _fresh_venv(tmp_path: Path, wheel: Path, env: dict[str, str]) -> tuple[Path, str]:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"

    def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout)

    if FROM_REGISTRY:
        assert run(sys.executable, "-m", "venv", venv).returncode == 0
        done = run(python, "-m", "pip", "install", "-q", wheel, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        return python, "dependencies from the package registry"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    pip = (sys.executable, "-m", "pip", "--python", python)
    done = run(*pip, "install", "--no-deps", "--no-index", wheel)
    assert done.returncode == 0 and "Successfully installed vlmopt" in done.stdout, done.stdout + done.stderr
    count = _link_dependencies(wheel, tmp_path / "deps")
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(purelib) / "vlmopt_test_dependencies.pth").write_text(f"{tmp_path / 'deps'}\n")
    check = run(*pip, "check")
    assert check.returncode == 0, f"declared dependencies not satisfied in the fresh venv:\n{check.stdout}"
    return python, f"{count} dependency distributions linked from the test environment"


def _clean_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH (it would put the checkout on the path), no VLMOPT_* settings, a HOME of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VLMOPT_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), MPLCONFIGDIR=str(home / "mpl"), PATH=f"{os.path.dirname(sys.executable)}:/usr/bin:/bin")
    return env


def test_installed_wheel_plans_the_bundled_workload_and_lists_gpus(wheel: Path, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    started = time.monotonic()
    python, how = _fresh_venv(tmp_path, wheel, env)
    install_s = time.monotonic() - started
    work = tmp_path / "elsewhere"  # outside the checkout: no profiles/, no vlmopt/ beside it
    work.mkdir()
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, env=env).stdout.strip())

    where = subprocess.run(
        [str(python), "-c", "import json, vlmopt, vlmopt.paths as p; "
         "print(json.dumps([vlmopt.__file__, str(p.bundled_data_dir())]))"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )
    package_file, data_dir = json.loads(where.stdout)
    assert Path(package_file).is_relative_to(site), package_file
    assert Path(data_dir) == site / "vlmopt" / "data"
    assert not Path(package_file).is_relative_to(REPO_ROOT)

    vlmopt = str(python.parent / "vlmopt")
    plan = subprocess.run([vlmopt, "plan", "--out", "deploy/example", "--report-dir", "reports/example"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr[-3000:]
    written = json.loads((work / "deploy" / "example" / "plan.json").read_text())
    assert written["services"] and written["node_groups"]
    sources = [entry["source"] for entry in written["inputs"]]
    assert any("vlmopt/data/prices.yaml" in s for s in sources), sources  # the bundled catalog, named portably
    assert (work / "reports" / "example" / "report.md").is_file()

    gpus = subprocess.run([vlmopt, "gpus"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert gpus.returncode == 0, gpus.stderr[-3000:]
    assert "Traceback" not in gpus.stdout + gpus.stderr
    has_gpu = shutil.which("nvidia-smi") is not None
    if not has_gpu:  # no NVIDIA driver here: the one clean line saying why nothing is listed
        assert "No GPUs listed:" in gpus.stdout, gpus.stdout
    else:
        assert "GPU catalog: vlmopt/data/gpus.yaml" in gpus.stdout or "No GPUs" in gpus.stdout, gpus.stdout
    print(f"fresh venv ({how}) ready in {install_s:.1f} s; plan + gpus ran from {work}")
