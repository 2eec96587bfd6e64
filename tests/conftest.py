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


# --- the family matrix: one tiny checkpoint per VLM family, quantized with every method, served by vLLM ---------

FAMILY_QUANTIZE_SAMPLES = 4  # calibration samples for gptq/awq: enough for the Hessian / scales of a 2-layer model
FAMILY_HELDOUT_PROMPTS = 4  # fidelity prompts per variant (the LLaVA fixture above uses the default 8)


class FamilyStore:
    """Tiny family checkpoints and their quantized variants, built lazily, once per session, and recorded into the
    family matrix (vlmopt/testing/matrix.py) as they are made."""

    def __init__(self, root: Path, recorder: object) -> None:
        self.root = root
        self.recorder = recorder
        self._models: dict[str, Path] = {}
        self._variants: dict[str, Path] = {}

    def model(self, name: str) -> Path:
        if name not in self._models:
            from vlmopt.testing.families import build_tiny_family

            self._models[name] = build_tiny_family(name, self.root / "models" / name)
        return self._models[name]

    def variants(self, name: str) -> Path:
        """The manifest path of `name` quantized with fp8, int8, gptq and awq (real llm-compressor)."""
        if name not in self._variants:
            from vlmopt.quantize import QuantizeRequest, parse_methods, run_quantize

            request = QuantizeRequest(model_dir=self.model(name), methods=parse_methods("fp8,int8,gptq,awq"),
                                      out_dir=self.root / "variants", samples=FAMILY_QUANTIZE_SAMPLES,
                                      max_seq_len=1024, heldout_prompts=FAMILY_HELDOUT_PROMPTS)
            result = run_quantize(request)
            self.record_quantized(name, result.manifest_path)
            self._variants[name] = result.manifest_path
        return self._variants[name]

    def record_quantized(self, name: str, manifest_path: Path) -> None:
        from vlmopt.schemas import VariantManifest, load_model

        manifest = load_model(VariantManifest, manifest_path)
        made = {v.name: v for v in manifest.variants}
        rejected = {r.name: r for r in manifest.rejected}
        for method in ("fp8", "int8", "gptq", "awq"):
            variant = made.get(method)
            if variant is None:
                reason = rejected[method].reason if method in rejected else "no variant was produced"
                self.recorder.record(name, method, "quantized", "no", reason)
                continue
            fidelity = variant.fidelity
            detail = f"KL {fidelity.mean_kl:.1e}, top-1 {fidelity.top1_agreement:.0%}" if fidelity else ""
            self.recorder.record(name, method, "quantized", "yes" if variant.verified else "no", detail)
            tied = [note for note in variant.notes if "is tied to" in note]
            self.recorder.record(name, method, "vision_kept", "yes" if variant.vision_intact else "no",
                                 "lm_head tied, embedding kept" if tied else "")


@pytest.fixture(scope="session")
def family_matrix(artifacts_dir: Path) -> object:
    """The session's family matrix, written to test-artifacts/family-matrix.json as cells are proved."""
    from vlmopt.machine import cpu_flags, cpu_model_name
    from vlmopt.schemas import utc_now_iso
    from vlmopt.testing.families import FAMILIES
    from vlmopt.testing.matrix import FamilyMatrix, MatrixRecorder

    flags = cpu_flags()
    machine = f"{cpu_model_name()}, {os.cpu_count()} cores, " + ("AVX-512" if "avx512f" in flags else "AVX2 only")
    matrix = FamilyMatrix(started=utc_now_iso(), machine=machine, families={f.name: f.like for f in FAMILIES})
    return MatrixRecorder(artifacts_dir / "family-matrix.json", matrix)


@pytest.fixture(scope="session")
def family_store(tmp_path_factory: pytest.TempPathFactory, family_matrix: object) -> FamilyStore:
    pytest.importorskip("llmcompressor", reason="the family matrix needs the quantize extra (scripts/setup.sh main)")
    return FamilyStore(tmp_path_factory.mktemp("families"), family_matrix)


@pytest.fixture
def family_variants(request: pytest.FixtureRequest, family_store: FamilyStore):
    """`family_variants(name)` -> manifest path. LLaVA reuses the session's `tiny_variants` (same seed-0 model)."""

    def get(name: str) -> Path:
        if name == "llava":
            manifest_path = request.getfixturevalue("tiny_variants")
            if "llava" not in family_store._variants:
                family_store.record_quantized("llava", manifest_path)
                family_store._variants["llava"] = manifest_path
                family_store._models.setdefault("llava", request.getfixturevalue("tiny_model_dir"))
            return manifest_path
        return family_store.variants(name)

    return get


@pytest.fixture
def family_model(request: pytest.FixtureRequest, family_store: FamilyStore):
    """`family_model(name)` -> the bf16 tiny checkpoint. LLaVA reuses the session's `tiny_model_dir`."""

    def get(name: str) -> Path:
        if name == "llava":
            family_store._models.setdefault("llava", request.getfixturevalue("tiny_model_dir"))
        return family_store.model(name)

    return get
