"""The architecture reader on the real tiny LLaVA folder (built by vlmopt.testing), and a memory fit of it."""

from __future__ import annotations

from vlmopt.hw.models import load_model_arch
from vlmopt.plan.memory import fit_memory, kv_bytes_per_token
from vlmopt.testing.tiny_vlm import TinyVlmSpec


def test_tiny_llava_folder_is_read_from_config_json(tiny_model_dir):
    spec = TinyVlmSpec()
    arch = load_model_arch(str(tiny_model_dir))
    assert arch.family == "llava"
    assert (arch.num_layers, arch.hidden_size, arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (
        spec.text_layers, spec.text_hidden, spec.text_heads, spec.text_kv_heads, spec.text_hidden // spec.text_heads
    )
    assert arch.image_tokens(56, 56) == spec.image_tokens == 16
    # 2 x 2 layers x 2 KV heads x 64 head_dim x 2 bytes = 1 KiB per token
    assert kv_bytes_per_token(arch) == 1024
    on_disk = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    # The parameter count from the shapes matches the checkpoint: bf16 = 2 bytes each (+ the safetensors header).
    assert abs(on_disk - 2 * arch.total_params) < 64 * 1024
    fit = fit_memory(arch, "BF16", memory_gib=1.0, max_model_len=1024, bytes_on_disk=on_disk, runtime_reserve_gib=0.25)
    assert fit.fits and fit.kv_token_capacity > 1024
