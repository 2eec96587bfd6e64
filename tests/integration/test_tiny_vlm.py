"""The tiny offline VLM: deterministic, in the key layout vLLM loads, and a working image+text processor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the tiny VLM needs torch: install vlmopt[quantize]")

from vlmopt.testing import TinyVlmSpec, build_tiny_vlm  # noqa: E402


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = build_tiny_vlm(tmp_path / "again", TinyVlmSpec(seed=0))
    other = build_tiny_vlm(tmp_path / "other", TinyVlmSpec(seed=1))
    assert _digest(again) == _digest(tiny_model_dir)
    assert (again / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()
    assert _digest(other) != _digest(tiny_model_dir)


def test_checkpoint_uses_hub_key_layout(tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
        dtypes = {str(handle.get_tensor(k).dtype) for k in keys}
    vision = [k for k in keys if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    assert dtypes == {"torch.bfloat16"}
    for name in ("config.json", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (tiny_model_dir / name).exists(), name


def test_processor_expands_image_and_model_runs(tiny_model_dir: Path) -> None:
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    meta = json.loads((tiny_model_dir / "vlmopt_tiny.json").read_text())
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")
    image = Image.fromarray((np.random.default_rng(0).random((80, 120, 3)) * 255).astype("uint8"))
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((inputs["input_ids"] == image_token_id).sum()) == meta["image_tokens"] == 16
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 1024
    assert not torch.isnan(logits).any()


def test_overwrite_replaces_only_a_tiny_model_folder(tmp_path: Path) -> None:
    from vlmopt.atomic import FolderNotOursError

    real = tmp_path / "someone-elses-model"
    real.mkdir()
    (real / "config.json").write_text("{}")
    with pytest.raises(FolderNotOursError, match="not a tiny model folder"):
        build_tiny_vlm(real, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["someone-elses-model"]
    assert [p.name for p in real.iterdir()] == ["config.json"]
