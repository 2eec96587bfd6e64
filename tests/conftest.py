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
    tiers = ("unit", "integration", "e2e")
    for item in items:
        if any(item.get_closest_marker(tier) for tier in tiers):
            continue  # an explicit tier marker wins over the folder
        parts = Path(str(item.fspath)).parts
        for tier in tiers:
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


@pytest.fixture(scope="session")
def tiny_variants(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA quantized once with all four methods (fp8, int8, gptq, awq) by the real llm-compressor;
    returns the path of variants/<model>/manifest.json. Shared by the quantize integration tests and the e2e tests."""
    pytest.importorskip("llmcompressor", reason="quantizing needs the quantize extra (scripts/setup.sh main)")
    from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize

    request = QuantizeRequest(
        model_dir=tiny_model_dir,
        methods=parse_methods("fp8,int8,gptq,awq"),
        out_dir=tmp_path_factory.mktemp("variants"),
        samples=8,
        max_seq_len=512,
    )
    result = run_quantize(request)
    failed = [f"{o.name}: {o.status} ({o.message})" for o in result.outcomes if o.status != "created"]
    assert not failed, f"tiny_variants: {failed}"
    return result.manifest_path
