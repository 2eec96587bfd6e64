"""Every VLM family's tiny checkpoint, quantized by the real llm-compressor (tests/conftest.py `family_variants`),
served by the real vLLM of the serve env: bf16, FP8 and INT8 everywhere, W4A16 (GPTQ, AWQ) where the CPU has AVX-512
(else skipped, saying why); VLMOPT_FAMILY_MATRIX=quick serves one quantized variant per family instead. Each served
variant answers an image request whose `usage.prompt_tokens` equals what the checkpoint's own processor makes of the
same chat (so the image tokens are counted), and takes one short benchmark point through `vlmopt benchmark
--endpoint`.

A family the serve env's vLLM does not load (Mllama: removed from vLLM after 0.10.2; the Transformers fallback vLLM
then tries fails on its processor) is started once to prove that with vLLM's own error; its variants are still
quantized and verified (tests/integration/test_families_quantize.py).

Servers run with `--enforce-eager`: on CPU that skips torch.compile's warm-up (about two minutes of a three-minute
start on a loaded 2-core box) and changes nothing this file checks (weights, quantization kernels, processor, chat
template, token counts). While one variant's test talks to its server, the next variant's server starts in the
background (`ServerPipeline`): on 2 cores a start (three Python processes importing torch and vLLM, one after the
other) then overlaps the current test and the next family's quantization instead of adding to them. At most two
servers are alive at once. The last test renders the family matrix of this run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmopt.bench.server import ServerStartError, VllmServer
from vlmopt.bench.support import unservable_reason
from vlmopt.cli import app
from vlmopt.schemas import BenchmarkProfile, ServerArgs, VariantManifest, load_model
from vlmopt.testing.families import FAMILY_NAMES, family

from .chat import noise_image, png_data_url, stream_chat

REPO_ROOT = Path(__file__).resolve().parents[2]
QUESTION = "what is in the image"
IMAGE_SIZE = (112, 84)  # not square: the processors' resizing and tiling rules matter
SERVER_FLAGS = ["--enforce-eager"]
# vLLM 0.32 removed Mllama (its registry: "supported in vLLM until v0.10.2", which `--model-impl vllm` prints) and
# falls back to its Transformers backend, which needs a processor hook MllamaProcessor does not have.
UNSERVABLE = {"mllama": ("TransformersMultiModalForCausalLM",
                         "'MllamaProcessor' object has no attribute '_get_num_multimodal_tokens'")}
SHARED_SERVER = ("llava", "bf16")
SERVED_FAMILIES = [name for name in FAMILY_NAMES if name not in UNSERVABLE]
METHODS = ("bf16", "fp8", "int8", "gptq", "awq")
# The default (and CI) serves bf16, FP8 and INT8 of every family, W4A16 where the CPU allows. For a quicker local
# loop, VLMOPT_FAMILY_MATRIX=quick serves each family once, with a quantized variant (its processor, chat template,
# token counts and compressed-tensors loading), alternating FP8 and INT8 so both schemes meet several architectures;
# LLaVA's bf16 rides on the session's shared server.
FULL_MATRIX = os.environ.get("VLMOPT_FAMILY_MATRIX", "full") != "quick"
QUICK_TIER = [("llava", "bf16")] + [(name, ("fp8", "int8")[i % 2])
                                    for i, name in enumerate(n for n in SERVED_FAMILIES if n != "llava")]
CASES = [(name, method) for name in SERVED_FAMILIES for method in METHODS] if FULL_MATRIX else QUICK_TIER
BENCH = ["--input-tokens", "16", "--output-tokens", "8", "--num-prompts", "4", "--warmup", "0",
         "--concurrency", "2", "--image-size", "56x56"]


def _env() -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def processor_prompt_tokens(model_dir: Path, image) -> tuple[int, int]:
    """(prompt tokens with the image, prompt tokens of the same question without it), counted by the checkpoint's
    own processor and chat template the way vLLM's chat endpoint does (template writes the specials)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    with_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text_only = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(with_image, add_generation_prompt=True)
    encoded = processor(images=[image], text=[prompt], add_special_tokens=False, return_tensors="np")
    text_prompt = processor.apply_chat_template(text_only, add_generation_prompt=True)
    text_ids = processor.tokenizer([text_prompt], add_special_tokens=False, return_tensors="np")["input_ids"]
    return int(encoded["input_ids"].shape[-1]), int(text_ids.shape[-1])


def _variant_dir(manifest_path: Path, method: str) -> tuple[Path, str]:
    manifest = load_model(VariantManifest, manifest_path)
    names = [v.name for v in manifest.variants]
    assert method in names, f"{method} was not produced: {[(r.name, r.reason) for r in manifest.rejected]}"
    return manifest.variant_dir(method, manifest_path), manifest.variant(method).scheme


class ServerPipeline:
    """Hands each case its started server, and launches the next case's server meanwhile (in this thread: the
    server's guard process ends the server when the thread that launched it ends)."""

    def __init__(self, order: list[tuple[str, str]], args_for: Callable[[tuple[str, str]], ServerArgs | None],
                 log_dir: Path, serve_python: Path) -> None:
        self.order = order
        self.args_for = args_for  # None: this case needs no server of its own (skipped, or shared)
        self.log_dir = log_dir
        self.serve_python = serve_python
        self._next: tuple[tuple[str, str], VllmServer] | None = None

    def _launch(self, case: tuple[str, str]) -> None:
        args = self.args_for(case)
        if args is not None:
            server = VllmServer(args, log_dir=self.log_dir, startup_timeout_s=900, env=_env(),
                                python=self.serve_python)
            self._next = (case, server.launch())

    def take(self, case: tuple[str, str]) -> VllmServer:
        """The healthy server of `case` (the caller stops it); the following case's server is launched first."""
        if self._next is not None and self._next[0] != case:
            self.close()  # run out of the expected order: never keep more than one spare server
        if self._next is None:
            self._launch(case)
        assert self._next is not None, f"{case} has no server of its own"
        _, server = self._next
        self._next = None
        position = self.order.index(case) if case in self.order else len(self.order)
        for following in self.order[position + 1:]:
            if self.args_for(following) is not None:
                self._launch(following)
                break
        return server.wait_ready()

    def close(self) -> None:
        if self._next is not None:
            self._next[1].stop()
            self._next = None


def _benchmark_point(server: VllmServer, out: Path) -> BenchmarkProfile:
    result = CliRunner().invoke(app, ["benchmark", "--endpoint", server.base_url, "--model", server.model_name,
                                      "--out", str(out), *BENCH])
    assert result.exit_code == 0, result.output
    (path,) = sorted(out.rglob("*.json"))
    return load_model(BenchmarkProfile, path)


def _scheme(method: str) -> str:
    from vlmopt.quantize.recipes import METHODS

    return "BF16" if method == "bf16" else METHODS[method].scheme


@pytest.fixture(scope="module")
def server_pipeline(request: pytest.FixtureRequest, family_store, serve_python: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPipeline]:
    """Cases in the order pytest will run them (selection with -k respected)."""
    order = [tuple(item.callspec.params[k] for k in ("name", "method")) for item in request.session.items
             if item.originalname == "test_family_variant_serves_an_image_and_a_benchmark_point"]

    def args_for(case: tuple[str, str]) -> ServerArgs | None:
        name, method = case
        if (name, method) == SHARED_SERVER or unservable_reason(_scheme(method)):
            return None
        if method == "bf16":
            model_dir = family_store.model(name)
        else:
            model_dir, _ = _variant_dir(family_store.variants(name), method)
        return ServerArgs(model=str(model_dir), served_model_name=f"{name}-{method}", max_model_len=2048,
                          max_num_seqs=4, extra_args=SERVER_FLAGS)

    pipeline = ServerPipeline(order, args_for, tmp_path_factory.mktemp("family-servers"), serve_python)
    yield pipeline
    pipeline.close()


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_family_variant_serves_an_image_and_a_benchmark_point(name: str, method: str, family_variants,
                                                               family_matrix, server_pipeline: ServerPipeline,
                                                               request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    model_dir, scheme = _variant_dir(family_variants(name), method)
    why_not = unservable_reason(scheme)
    if why_not:
        family_matrix.record(name, method, "served", "skipped", why_not)
        family_matrix.record(name, method, "benchmarked", "skipped", why_not)
        pytest.skip(why_not)

    image = noise_image(7, IMAGE_SIZE)
    expected, expected_text = processor_prompt_tokens(model_dir, image)
    own_server = (name, method) != SHARED_SERVER
    # LLaVA bf16 is the session's `tiny_server`, running for other e2e tests anyway: no extra start.
    server = server_pipeline.take((name, method)) if own_server else request.getfixturevalue("tiny_server")
    try:
        text_only = stream_chat(server.base_url, server.model_name, [{"type": "text", "text": QUESTION}])
        with_image = stream_chat(server.base_url, server.model_name,
                                 [{"type": "image_url", "image_url": {"url": png_data_url(7, IMAGE_SIZE)}},
                                  {"type": "text", "text": QUESTION}])
        for result in (text_only, with_image):
            assert result["done"] and result["usage"]["completion_tokens"] >= 1, result
        served, served_text = with_image["usage"]["prompt_tokens"], text_only["usage"]["prompt_tokens"]
        assert (served, served_text) == (expected, expected_text), (
            f"vLLM counted {served} prompt tokens ({served_text} without the image); the processor makes "
            f"{expected} ({expected_text})")
        image_tokens = expected - expected_text
        assert image_tokens >= 1
        family_matrix.record(name, method, "served", "yes", f"image: +{image_tokens} prompt tokens, = processor")
        if method != "bf16":
            log = server.log_path.read_text(errors="replace")
            assert "compressed-tensors" in log or "compressed_tensors" in log, "vLLM did not read the quant config"

        profile = _benchmark_point(server, tmp_path / "bench")
        [point] = profile.points
        assert profile.complete and point.completed == 4 and point.failed == 0, point.errors
        assert point.mean_prompt_tokens > 16 and 0 < point.image_token_share < 1
        server.check_alive()
        family_matrix.record(name, method, "benchmarked", "yes", "c2: 4/4 requests")
    finally:
        if own_server:
            server.stop()


@pytest.mark.parametrize("name", list(UNSERVABLE))
def test_family_vllm_cannot_load_says_why(name: str, family_variants, family_matrix, serve_python: Path,
                                          tmp_path: Path) -> None:
    """The serve env's vLLM has no implementation of the architecture, falls back to its Transformers modeling
    backend, and that fails on the processor before any weight is read; so one start of the bf16 checkpoint speaks
    for every variant. The failure must be vLLM's own, as a user starting it would see it."""
    manifest_path = family_variants(name)  # quantized and verified regardless (integration tests check it)
    model_dir, _ = _variant_dir(manifest_path, "bf16")
    args = ServerArgs(model=str(model_dir), served_model_name=name, max_model_len=2048, extra_args=SERVER_FLAGS)
    server = VllmServer(args, log_dir=tmp_path, startup_timeout_s=600, env=_env(), python=serve_python)
    with pytest.raises(ServerStartError):
        server.start()
    log = server.log_path.read_text(errors="replace")
    fallback, failure = UNSERVABLE[name]
    assert f"Resolved architecture: {fallback}" in log, log[-3000:]
    assert failure in log, log[-3000:]
    reason = (f"vLLM has no {family(name).architecture} (removed after v0.10.2); its Transformers fallback "
              f"({fallback}) fails: {failure}")
    for method in ("bf16", "fp8", "int8", "gptq", "awq"):
        family_matrix.record(name, method, "served", "no", reason)
        family_matrix.record(name, method, "benchmarked", "no", "not served")


def test_matrix_renders_from_this_run(family_matrix, serve_python: Path) -> None:
    """Runs last in this module: the generator turns this run's results into the table of docs/quantize.md."""
    from vlmopt.bench.server import serve_env_version

    family_matrix.matrix.engine = serve_env_version(serve_python)
    family_matrix.matrix.server_flags = SERVER_FLAGS
    family_matrix.save()
    out = family_matrix.path.with_suffix(".md")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "family_matrix.py"), "--results",
                           str(family_matrix.path), "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert len(rows) == len(METHODS) * len(FAMILY_NAMES)
    data = json.loads(family_matrix.path.read_text())
    served = {(r["family"], r["method"]) for r in data["rows"] if "served" in r["cells"]}
    if FULL_MATRIX:
        assert served >= {(n, m) for n in FAMILY_NAMES for m in ("bf16", "fp8", "int8")}, "a family was not served"
        for row in rows:
            assert "not run" not in row, row
    else:
        assert {name for name, _ in served} == set(FAMILY_NAMES), "a family was never started"
