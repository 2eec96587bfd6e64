"""Every VLM family vlmopt has rules for, on its tiny checkpoint (vlmopt.testing.families): the checkpoint is laid out
as the hub's, and the real llm-compressor quantizes it with all four methods into verified variants whose vision
tower and projector are byte-identical to bf16 and whose lm_head (or, when tied, the embedding) is kept.

The variants are made once per session (`family_variants` in tests/conftest.py) and shared with
tests/e2e/test_families.py, which serves them; both record into the family matrix of docs/quantize.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vlmopt.quantize.ignore_rules import FAMILIES as RULE_FAMILIES
from vlmopt.quantize.ignore_rules import resolve_ignore, vision_patterns
from vlmopt.schemas import VariantManifest, load_model
from vlmopt.testing.families import FAMILIES, FAMILY_NAMES, family

METHODS = ("fp8", "int8", "gptq", "awq")
# Weight-name prefixes of the hub checkpoints (what vLLM's loaders map): vision tower, projector, text decoder.
HUB_PREFIXES = {
    "llava": ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.layers."),
    "llava-onevision": ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.layers."),
    "qwen2-vl": ("visual.blocks.", "visual.merger.", "model.layers."),
    "qwen2.5-vl": ("visual.blocks.", "visual.merger.", "model.layers."),
    "gemma3": ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.layers."),
    "idefics3": ("model.vision_model.", "model.connector.", "model.text_model.layers."),
    "mistral3": ("vision_tower.transformer.", "multi_modal_projector.", "language_model.model.layers."),
    "mllama": ("vision_model.", "multi_modal_projector.", "language_model.model.layers."),
    "internvl": ("vision_tower.encoder.", "multi_modal_projector.", "language_model.model.layers."),
}
PROCESSORS = {
    "llava": "LlavaProcessor", "llava-onevision": "LlavaOnevisionProcessor", "qwen2-vl": "Qwen2VLProcessor",
    "qwen2.5-vl": "Qwen2VLProcessor", "gemma3": "Gemma3Processor", "idefics3": "Idefics3Processor",
    "mistral3": "PixtralProcessor", "mllama": "MllamaProcessor", "internvl": "InternVLProcessor",
}


def _keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    keys = []
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as handle:
            keys += list(handle.keys())
    return keys


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def test_every_rules_family_has_a_tiny_checkpoint() -> None:
    """Each ArchitectureFamily of ignore_rules.py is exercised by a real checkpoint, and each checkpoint's
    model_type resolves to the family it is registered under."""
    assert {f.rules_family for f in FAMILIES} == {f.name for f in RULE_FAMILIES}
    for entry in FAMILIES:
        plan = resolve_ignore({"model_type": entry.model_type, "architectures": [entry.architecture],
                               "vision_config": {}})
        assert plan.family.name == entry.rules_family, entry.name
    assert set(HUB_PREFIXES) == set(PROCESSORS) == set(FAMILY_NAMES)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_checkpoint_is_laid_out_like_the_hub(name: str, family_model) -> None:
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    entry = family(name)
    folder = family_model(name)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [entry.architecture] and config["model_type"] == entry.model_type

    keys = _keys(folder)
    vision, projector, text = HUB_PREFIXES[name]
    assert any(k.startswith(vision) for k in keys), f"no {vision}* tensor"
    assert any(k.startswith(projector) for k in keys), f"no {projector}* tensor"
    assert any(k.startswith(text) for k in keys), f"no {text}* tensor"
    rules = next(f for f in RULE_FAMILIES if f.name == entry.rules_family)
    unmatched_vision = [k for k in keys if k.startswith((vision, projector))
                        and not any(re.match(p, k) for p in vision_patterns(rules))]
    assert not unmatched_vision, f"the {rules.name} keep rules miss {unmatched_vision[:3]}"
    heads = [k for k in keys if k.endswith("lm_head.weight")]
    assert (heads == []) == entry.tied_embeddings, heads  # a tied lm_head has no tensor of its own

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    assert type(processor).__name__ == PROCESSORS[name]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.fromarray((np.random.default_rng(0).random((84, 112, 3)) * 255).astype("uint8"))
    inputs = processor(images=[image], text=[prompt], return_tensors="np", add_special_tokens=False)
    # the id the model replaces with image features (Gemma 3's processor calls <start_of_image> its image token)
    image_token = config.get("image_token_id", config.get("image_token_index"))
    image_tokens = int((inputs["input_ids"][0] == image_token).sum())
    # Mllama reads the image through cross-attention: one <|image|> token; every other family expands it.
    assert image_tokens == 1 if name == "mllama" else image_tokens >= 4, image_tokens


@pytest.fixture(scope="module")
def manifests(request: pytest.FixtureRequest) -> dict[str, Path]:
    return {}


def _manifest(name: str, family_variants, cache: dict[str, Path]) -> tuple[VariantManifest, Path]:
    if name not in cache:
        cache[name] = family_variants(name)
    return load_model(VariantManifest, cache[name]), cache[name]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_quantized_with_every_method_and_verified(name: str, family_variants, manifests) -> None:
    manifest, manifest_path = _manifest(name, family_variants, manifests)
    assert manifest.architecture == family(name).architecture
    assert not manifest.rejected, [(r.name, r.reason) for r in manifest.rejected]
    assert [v.name for v in manifest.variants] == ["bf16", *METHODS]
    entry = family(name)
    base_dir = manifest.variant_dir("bf16", manifest_path)
    base = _tensors(base_dir)
    rules = next(f for f in RULE_FAMILIES if f.name == entry.rules_family)
    keep = vision_patterns(rules)
    vision = [k for k in base if any(re.match(p, k) for p in keep)]
    # the text decoder's projections (q/k/v/o, gate/up/down; Mllama's cross-attention too), by checkpoint name
    text_linears = {k.removesuffix(".weight") for k in base
                    if k.endswith("_proj.weight") and ".layers." in k and not any(re.match(p, k) for p in keep)}
    assert vision and text_linears

    for method in METHODS:
        variant = manifest.variant(method)
        assert variant.verified and variant.vision_intact is True, (method, variant.notes)
        fidelity = variant.fidelity
        assert fidelity is not None and fidelity.prompts > 0 and fidelity.positions > 0
        assert 0 <= fidelity.mean_kl < 1.0 and 0 < fidelity.top1_agreement <= 1, (method, fidelity)
        # Every text decoder projection is quantized, nothing else is (checkpoint names).
        assert set(variant.quantized_modules) == text_linears, (method, sorted(set(variant.quantized_modules)
                                                                              ^ text_linears)[:4])

        tensors = _tensors(manifest.variant_dir(method, manifest_path))
        for key in vision:  # read with the safetensors library, not vlmopt's own header reader
            assert key in tensors and tensors[key].dtype == base[key].dtype, (method, key)
            assert tensors[key].equal(base[key]), (method, key)
        assert not [k for k in tensors if any(re.match(p, k) for p in keep) and "weight_" in k], method
        heads = [k for k in base if k.endswith("lm_head.weight")]
        if entry.tied_embeddings:
            embedding = next(k for k in base if k.endswith("embed_tokens.weight"))
            assert not heads and not [k for k in tensors if "lm_head" in k], method
            assert tensors[embedding].equal(base[embedding]), method
            assert any("is tied to" in note for note in variant.notes), variant.notes
        else:
            [head] = heads
            assert tensors[head].dtype == base[head].dtype and tensors[head].equal(base[head]), method
        config = json.loads((manifest.variant_dir(method, manifest_path) / "config.json").read_text())
        assert config["architectures"] == [entry.architecture]


_HIDE_TORCHVISION = """
import importlib.util, sys
_find_spec = importlib.util.find_spec
def find_spec(name, package=None):
    if name == "torchvision" or name.startswith("torchvision."):
        return None
    return _find_spec(name, package)
importlib.util.find_spec = find_spec
sys.modules["torchvision"] = None
from vlmopt.cli import main
main()
"""


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def test_processor_that_cannot_load_names_the_reason(family_model, tmp_path: Path) -> None:
    """An environment without torchvision (as a plain `pip install vlmopt[quantize]` had before it was declared):
    transformers' ImportError message starts with a newline; the user still gets its reason on one line."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _HIDE_TORCHVISION, "quantize", str(family_model("qwen2-vl")),
                           "--method", "fp8", "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "300"}, check=False)
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert "cannot load its processor/tokenizer: ImportError: Qwen2VLVideoProcessor requires" in line, line
    assert "orchvision" in line
    assert not out.exists()


def test_unreadable_tokenizer_names_the_reason(family_model, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from vlmopt.cli import app

    model = tmp_path / "broken-gemma3"
    shutil.copytree(family_model("gemma3"), model)
    (model / "tokenizer.json").write_text("{ not json")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["quantize", str(model), "--method", "int8", "--out", str(out)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.stderr)
    assert "cannot load its processor/tokenizer:" in line and line.split("tokenizer:", 1)[1].strip(), line
    assert not out.exists()
