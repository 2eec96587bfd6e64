"""Pure logic of the quantize stage: ignore rules per family, method parsing, size estimate, fidelity maths,
safetensors header reading, staging."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vlmopt.quantize.errors import QuantizeInputError
from vlmopt.quantize.ignore_rules import FAMILIES, matches_any, resolve_ignore
from vlmopt.quantize.recipes import METHODS, parse_methods
from vlmopt.quantize.safetensors_index import TensorEntry, differing_tensors, read_header
from vlmopt.quantize.size_estimate import estimate_variant_bytes, quantized_weight_bytes

# In-memory (transformers 5) module names per family: the vision part must be kept, the text decoder quantized.
FAMILY_NAMES = {
    "llava": ("model.vision_tower.encoder.layers.0.mlp.fc1", "model.multi_modal_projector.linear_1",
              "model.language_model.layers.0.mlp.down_proj"),
    "qwen2_5_vl": ("model.visual.blocks.0.attn.qkv", "model.visual.merger.mlp.0",
                   "model.language_model.layers.0.self_attn.q_proj"),
    "gemma3": ("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1",
               "model.multi_modal_projector.mm_input_projection", "model.language_model.layers.0.mlp.up_proj"),
    "idefics3": ("model.vision_model.encoder.layers.0.mlp.fc1", "model.connector.modality_projection.proj",
                 "model.text_model.layers.0.mlp.gate_proj"),
    "mistral3": ("model.vision_tower.transformer.layers.0.attention.q_proj", "model.multi_modal_projector.linear_1",
                 "model.language_model.layers.0.self_attn.o_proj"),
    "mllama": ("model.vision_model.transformer.layers.0.mlp.fc1", "model.multi_modal_projector",
               "model.language_model.layers.3.cross_attn.q_proj"),
    "internvl": ("model.vision_tower.encoder.layer.0.mlp.fc1", "model.multi_modal_projector.linear_1",
                 "model.language_model.layers.0.mlp.down_proj"),
}


@pytest.mark.parametrize("model_type", list(FAMILY_NAMES))
def test_family_keeps_vision_projector_and_lm_head(model_type: str) -> None:
    plan = resolve_ignore({"model_type": model_type, "architectures": ["X"], "vision_config": {}})
    vision, projector, text = FAMILY_NAMES[model_type]
    assert matches_any(vision, plan.ignore) and matches_any(projector, plan.ignore)
    assert matches_any("lm_head", plan.ignore) and matches_any("language_model.lm_head", plan.ignore)
    assert not matches_any(text, plan.ignore)
    assert plan.vision_rules_applied and not plan.warnings


def test_every_family_is_reachable_and_distinct() -> None:
    types = [t for f in FAMILIES for t in f.model_types]
    assert len(types) == len(set(types))


def test_unknown_vlm_is_refused_naming_ignore() -> None:
    with pytest.raises(QuantizeInputError, match="--ignore"):
        resolve_ignore({"model_type": "brand_new_vlm", "vision_config": {}})
    plan = resolve_ignore({"model_type": "brand_new_vlm", "vision_config": {}}, ["lm_head", "re:.*eye.*"])
    assert plan.user_override and plan.ignore == ("lm_head", "re:.*eye.*")


def test_text_only_model_warns_vision_rules_did_not_apply() -> None:
    plan = resolve_ignore({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    assert not plan.family.is_vlm and plan.ignore == ("lm_head", "re:.*lm_head$")
    assert any("vision rules did not apply" in w for w in plan.warnings)


def test_user_override_replaces_rules_and_warns() -> None:
    plan = resolve_ignore({"model_type": "llava", "vision_config": {}}, ["lm_head"])
    assert plan.ignore == ("lm_head",) and not plan.vision_rules_applied
    assert any("replaces the vision rules" in w for w in plan.warnings)
    with pytest.raises(QuantizeInputError, match="regular expression"):
        resolve_ignore({"model_type": "llava"}, ["re:("])


def test_parse_methods() -> None:
    assert [s.method for s in parse_methods("awq, gptq,fp8,awq")] == ["awq", "gptq", "fp8"]
    assert parse_methods("INT8")[0].scheme == "W8A8"
    with pytest.raises(QuantizeInputError, match="unknown method 'fp4'"):
        parse_methods("fp8,fp4")
    with pytest.raises(QuantizeInputError):
        parse_methods(" , ")


def test_quantized_weight_bytes_matches_formulae() -> None:
    # W4A16 g128 = 0.5 + 2/128 bytes per weight; FP8 per channel = 1 + 2/in.
    out_f, in_f = 4096, 4096
    assert quantized_weight_bytes(out_f, in_f, METHODS["gptq"]) == out_f * in_f // 2 + 2 * out_f * in_f // 128
    assert quantized_weight_bytes(out_f, in_f, METHODS["fp8"]) == out_f * in_f + 2 * out_f
    assert quantized_weight_bytes(out_f, in_f, METHODS["awq"]) > quantized_weight_bytes(out_f, in_f, METHODS["gptq"])


def _entry(name: str, shape: tuple[int, ...], dtype: str = "BF16") -> TensorEntry:
    n = 2
    for d in shape:
        n *= d
    return TensorEntry(name, dtype, shape, Path("x"), 0, n)


def test_estimate_quantizes_only_text_decoder_linears() -> None:
    tensors = {e.name: e for e in (
        _entry("language_model.model.layers.0.mlp.down_proj.weight", (256, 512)),
        _entry("language_model.model.layers.0.input_layernorm.weight", (256,)),
        _entry("language_model.lm_head.weight", (1024, 256)),
        _entry("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", (128, 64)),
    )}
    plan = resolve_ignore({"model_type": "llava", "vision_config": {}})
    total = estimate_variant_bytes(tensors, METHODS["gptq"], plan.family.text_layers_regex, plan.ignore)
    unchanged = 256 * 2 + 1024 * 256 * 2 + 128 * 64 * 2
    assert total == unchanged + quantized_weight_bytes(256, 512, METHODS["gptq"])


def _write_safetensors(path: Path, tensors: dict[str, bytes]) -> None:
    header, offset = {}, 0
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(tensors.values()))


def test_header_reader_and_byte_comparison(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "a.safetensors", {"v.w": b"\x01\x02\x03", "t.w": b"\x09"})
    _write_safetensors(tmp_path / "b.safetensors", {"t.w": b"\x08", "v.w": b"\x01\x02\x03"})
    _write_safetensors(tmp_path / "c.safetensors", {"v.w": b"\x01\x02\x04"})
    a, b, c = (read_header(tmp_path / f"{x}.safetensors") for x in "abc")
    assert a["v.w"].shape == (3,) and a["v.w"].nbytes == 3
    assert differing_tensors(a, b, ["v.w"]) == []
    assert differing_tensors(a, b, ["t.w"]) == ["t.w"]
    assert differing_tensors(a, c, ["v.w", "t.w"]) == ["v.w", "t.w"]


def test_fidelity_compare() -> None:
    import torch

    from vlmopt.quantize.fidelity import compare

    ref = [torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), dim=-1)]
    same = compare(ref, ref)
    assert same.mean_kl == pytest.approx(0.0, abs=1e-7) and same.top1_agreement == 1.0 and same.positions == 2
    flipped = [torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]]), dim=-1)]
    result = compare(ref, flipped)
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), dim=-1)
    expected = float((p * (p.log() - p.flip(0).log())).sum()) / 2
    assert result.mean_kl == pytest.approx(expected, rel=1e-5) and result.top1_agreement == 0.5
    with pytest.raises(ValueError, match="NaN"):
        compare(ref, [torch.full((2, 3), float("nan"))])


def test_exception_reason_is_never_empty() -> None:
    from vlmopt.quantize.errors import describe_exception

    # transformers' missing-backend ImportError: the message starts with a newline
    missing = ImportError("\nQwen2VLVideoProcessor requires the Torchvision library but it was not found.\n"
                          "Check out the instructions.")
    assert describe_exception(missing) == ("ImportError: Qwen2VLVideoProcessor requires the Torchvision library "
                                           "but it was not found.")
    assert describe_exception(RuntimeError()) == "RuntimeError (no message)"
    assert describe_exception(KeyError("")) == "KeyError (no message)"
    assert describe_exception(ValueError("  \n---\n  shape mismatch  ")) == "ValueError: shape mismatch"
    try:
        try:
            raise OSError("disk on fire")
        except OSError as cause:
            raise RuntimeError("") from cause
    except RuntimeError as chained:
        assert describe_exception(chained) == "RuntimeError (from OSError): disk on fire"
