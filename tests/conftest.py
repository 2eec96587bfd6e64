"""Shared fixtures. Expensive things (the tiny model, a running vLLM server, quantized variants) are built once per
session and shared by every test that needs them, so the whole suite stays inside CI's budget."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tier markers follow the folder, so `-m unit` / `-m e2e` select by tier without per-test decoration."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "integration", "e2e"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bf16 tiny LLaVA (seed 0), built offline once per session."""
    pytest.importorskip("torch", reason="the tiny VLM needs torch: install vlmopt[quantize] (scripts/setup.sh main)")
    from vlmopt.testing import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def serve_python() -> Path:
    """The serve env's python. Missing -> the e2e test fails with the fix (CI builds it; it must not skip)."""
    from vlmopt.bench.server import ServeEnvMissing, resolve_serve_python

    try:
        return resolve_serve_python()
    except ServeEnvMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def server_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path, serve_python: Path, server_log_dir: Path) -> Iterator[object]:
    """One running vLLM server on the bf16 tiny model, shared by every e2e test that only needs to talk to it."""
    from vlmopt.bench.server import VllmServer
    from vlmopt.schemas import ServerArgs

    args = ServerArgs(model=str(tiny_model_dir), served_model_name="tiny-llava", max_model_len=1024, max_num_seqs=32)
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with VllmServer(args, log_dir=server_log_dir, startup_timeout_s=600, env=env, python=serve_python) as server:
        yield server
