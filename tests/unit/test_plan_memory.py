"""Memory figures against hand calculations from public architectures (arithmetic in each test)."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import ModelArch, load_model_arch
from vlmopt.plan.memory import (
    GIB,
    SCHEMES,
    MemoryFit,
    fit_memory,
    kv_bytes_per_token,
    runtime_reserve_bytes,
    weight_bytes,
)

KIB = 1024
CATALOG = load_gpu_catalog()
QWEN7 = load_model_arch("qwen2.5-vl-7b")

# Llama-2-7B (meta-llama/Llama-2-7b-hf config.json): 32 layers, 32 heads, no GQA, head_dim 128, hidden 4096.
LLAMA2_7B = ModelArch(
    name="llama-2-7b", family="llama", num_layers=32, hidden_size=4096, num_attention_heads=32, num_kv_heads=32,
    head_dim=128, vocab_size=32000, intermediate_size=11008, max_position_embeddings=4096,
    image_token_rule={"kind": "fixed", "tokens_per_image": 1},
)


def test_llama2_7b_fp16_kv_cache_is_512_kib_per_token():
    # 2 (K,V) x 32 layers x 32 KV heads x 128 head_dim x 2 bytes = 524,288 B = 512 KiB
    assert kv_bytes_per_token(LLAMA2_7B) == 2 * 32 * 32 * 128 * 2 == 512 * KIB
    # LLaVA-1.5-7B decodes with the same Llama-2-7B shapes.
    assert kv_bytes_per_token(load_model_arch("llava-1.5-7b")) == 512 * KIB


def test_qwen2_5_vl_7b_gqa_kv_cache_is_56_kib_per_token():
    # 2 x 28 layers x 4 KV heads (GQA, 28 query heads) x 128 x 2 bytes = 57,344 B = 56 KiB
    assert kv_bytes_per_token(QWEN7) == 2 * 28 * 4 * 128 * 2 == 56 * KIB
    # fp8 KV cache halves it: 28 KiB
    assert kv_bytes_per_token(QWEN7, kv_dtype_bytes=1) == 28 * KIB


def test_cross_attention_layers_keep_no_per_token_kv():
    # Llama 3.2 11B Vision: 40 layers of which 8 cross-attention -> 2 x 32 x 8 x 128 x 2 = 131,072 B = 128 KiB
    assert kv_bytes_per_token(load_model_arch("llama-3.2-11b-vision")) == 128 * KIB


def test_bf16_weights_are_two_bytes_per_parameter():
    # Qwen2.5-VL-7B: 8.292 B parameters x 2 bytes = 16.58 GB = 15.44 GiB
    assert weight_bytes(QWEN7, "BF16") == 2 * QWEN7.total_params
    assert weight_bytes(QWEN7, "BF16") / GIB == pytest.approx(15.44, abs=0.01)


def test_w4a16_counts_group_128_scales_and_keeps_vision_and_embeddings_bf16():
    linear = QWEN7.decoder_linear_params()  # 28 x (q,k,v,o,gate,up,down) = 6.527 B
    assert linear == 28 * (3584 * 3584 * 2 + 3584 * 512 * 2 + 3 * 3584 * 18944)
    kept = QWEN7.total_params - linear  # embeddings + lm_head + norms + vision tower + projector
    # 4 bits + one bf16 scale per 128 weights = 4.125 bits; asymmetric adds a 4-bit zero point: 4.15625 bits
    assert weight_bytes(QWEN7, "W4A16") == pytest.approx(kept * 2 + linear * 4.125 / 8, abs=1)
    assert weight_bytes(QWEN7, "W4A16_ASYM") == pytest.approx(kept * 2 + linear * 4.15625 / 8, abs=1)
    assert weight_bytes(QWEN7, "W4A16") < weight_bytes(QWEN7, "W4A16_ASYM") < weight_bytes(QWEN7, "FP8_DYNAMIC")
    assert weight_bytes(QWEN7, "FP8_DYNAMIC") < weight_bytes(QWEN7, "BF16")


def test_fp8_adds_one_bf16_scale_per_output_channel():
    linear = QWEN7.decoder_linear_params()
    kept = QWEN7.total_params - linear
    channels = 28 * (3584 + 512 + 512 + 3584 + 18944 + 18944 + 3584)
    assert weight_bytes(QWEN7, "FP8_DYNAMIC") == kept * 2 + linear + channels * 2
    assert weight_bytes(QWEN7, "W8A8") == weight_bytes(QWEN7, "FP8_DYNAMIC")


def test_bytes_on_disk_win_over_the_estimate():
    assert weight_bytes(QWEN7, "W4A16", bytes_on_disk=6_000_000_000) == 6_000_000_000
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        weight_bytes(QWEN7, "INT3")


def test_fit_arithmetic_with_fixed_inputs():
    # 10 GiB x 0.9 = 9 GiB usable; 4 GiB weights + 1 GiB reserve -> 4 GiB KV
    # 4 GiB / (57,344 B x 16-token blocks) = 4681.1 blocks -> 4681 x 16 = 74,896 tokens
    fit = fit_memory(QWEN7, "BF16", memory_gib=10, max_model_len=8192, bytes_on_disk=4 * GIB,
                     runtime_reserve_gib=1.0)
    assert fit.fits and fit.reason == ""
    assert fit.usable_gib == pytest.approx(9.0)
    assert fit.kv_cache_gib == pytest.approx(4.0)
    assert fit.kv_token_capacity == 74_896
    assert fit.max_num_seqs_suggestion == 74_896 // 8192 == 9
    assert fit.weights_source == "bytes on disk" and fit.reserve_source == "user"
    assert fit_memory(QWEN7, "BF16", 10, 8192, bytes_on_disk=4 * GIB, runtime_reserve_gib=1.0,
                      expected_tokens_per_seq=1024).max_num_seqs_suggestion == 73
    assert fit.breakdown() == {"weights": 4.0, "kv_cache": 4.0, "reserve": 1.0, "total": 9.0, "usable": 9.0}


def test_reserve_formula_by_hand():
    # 8192 batched tokens on Qwen2.5-VL-7B:
    #   decoder: 8192 x (2 x 18944 + 4 x 3584) x 2 B = 855,638,016 B
    #   logits: 256 x 152064 x 4 B = 155,713,536 B
    #   vision: 8192 x 1280 x 2^2 x 6 x 2 B = 503,316,480 B
    #   fixed: 1.25 GiB = 1,342,177,280 B
    assert runtime_reserve_bytes(QWEN7, 8192) == 855_638_016 + 155_713_536 + 503_316_480 + 1_342_177_280


def test_qwen_7b_bf16_fits_a_whole_h100_but_not_a_1g_slice():
    h100 = CATALOG.get("h100-sxm-80gb")
    whole = fit_memory(QWEN7, "BF16", h100.memory_gib, 8192)
    assert whole.fits and 0 < whole.max_num_seqs_suggestion <= 256
    assert whole.kv_cache_gib == pytest.approx(whole.usable_gib - whole.weights_gib - whole.reserve_gib)
    small = fit_memory(QWEN7, "BF16", h100.mig_profile("1g.10gb").memory_gib, 8192)
    assert not small.fits and small.max_num_seqs_suggestion == 0
    assert "weights need 15.44 GiB but only 8.78 GiB is usable" in small.reason


def test_w4a16_fits_a_1g_slice_only_at_a_short_context():
    slice_gib = CATALOG.get("h100-sxm-80gb").mig_profile("1g.10gb").memory_gib
    assert fit_memory(QWEN7, "W4A16", slice_gib, 4096).fits
    long = fit_memory(QWEN7, "W4A16", slice_gib, 32768)
    assert not long.fits
    assert "fewer than max_model_len 32768" in long.reason and "1.75 GiB" in long.reason  # 32768 x 56 KiB


def test_no_room_for_kv_is_said_in_plain_words():
    fit = fit_memory(QWEN7, "BF16", 20, 1024, runtime_reserve_gib=3.0)
    # 18 GiB usable - 15.44 weights - 3 reserve < 0
    assert not fit.fits and fit.kv_token_capacity == 0
    assert "leave no room for the KV cache" in fit.reason


@pytest.mark.parametrize("scheme", SCHEMES)
def test_more_memory_never_fits_fewer_tokens(scheme):
    arch = load_model_arch("gemma-3-12b")
    capacities = [fit_memory(arch, scheme, gib, 8192).kv_token_capacity for gib in (16, 24, 40, 80, 141)]
    assert capacities == sorted(capacities)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"memory_gib": 0}, "memory_gib"), ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
     ({"max_model_len": 0}, "max_model_len"), ({"scheme": "NF4"}, "unknown quantization scheme")],
)
def test_bad_arguments_are_value_errors(kwargs, words):
    args = {"arch": QWEN7, "scheme": "BF16", "memory_gib": 80, "max_model_len": 4096} | kwargs
    with pytest.raises(ValueError, match=words):
        fit_memory(**args)


def test_memory_fit_serialises():
    fit = fit_memory(QWEN7, "FP8_DYNAMIC", 24, 4096)
    assert MemoryFit.model_validate_json(fit.model_dump_json()) == fit
