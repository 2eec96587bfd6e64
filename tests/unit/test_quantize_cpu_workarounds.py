"""The CPU-only workarounds around llm-compressor: bf16 matrix products through fp32 kernels give the bf16 path's
numbers (the reference path also accumulates in fp32 and rounds once), leave other dtypes alone, and are undone
afterwards; VLMOPT_CPU_BF16_MATMUL=native turns the patch off."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the workarounds patch torch: install vlmopt[quantize]")

from vlmopt.quantize import cpu_workarounds  # noqa: E402


@pytest.fixture
def needs_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend to be a CPU without native bf16 (this test must not depend on the machine it runs on)."""
    monkeypatch.setattr(cpu_workarounds, "accelerator_available", lambda: False)
    monkeypatch.setattr(cpu_workarounds, "native_bf16_matmul", lambda: False)
    monkeypatch.delenv(cpu_workarounds.MATMUL_ENV, raising=False)


def test_same_numbers_as_the_bf16_path(needs_patch: None) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 50, 256, generator=generator).to(torch.bfloat16)
    weight = torch.randn(192, 256, generator=generator).to(torch.bfloat16)
    bias = torch.randn(192, generator=generator).to(torch.bfloat16)
    a = torch.randn(1, 4, 50, 64, generator=generator).to(torch.bfloat16)
    b = torch.randn(1, 4, 64, 50, generator=generator).to(torch.bfloat16)
    reference = (torch.nn.functional.linear(x, weight, bias), torch.matmul(a, b), torch.bmm(a[0], b[0]))
    originals = (torch.nn.functional.linear, torch.matmul, torch.bmm)
    with cpu_workarounds.bf16_matmul_in_fp32() as active:
        assert active
        patched = (torch.nn.functional.linear(x, weight, bias), torch.matmul(a, b), torch.bmm(a[0], b[0]))
        module = torch.nn.Linear(256, 192).to(torch.bfloat16)
        assert module(x).dtype == torch.bfloat16  # nn.Linear goes through the patched functional
        fp32 = torch.nn.functional.linear(x.float(), weight.float())
        assert fp32.dtype == torch.float32  # other dtypes untouched
    assert (torch.nn.functional.linear, torch.matmul, torch.bmm) == originals  # undone
    for ref, got in zip(reference, patched, strict=True):
        assert got.dtype == torch.bfloat16 and got.shape == ref.shape
        # at most one bf16 rounding step apart (summation order), and nearly always identical
        ulp = ref.float().abs().clamp(min=1e-3) * 2**-7
        assert bool(((got.float() - ref.float()).abs() <= ulp).all())
        assert (got == ref).float().mean().item() > 0.99


def test_native_setting_and_native_cpus_are_left_alone(needs_patch: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_workarounds.MATMUL_ENV, "native")
    with cpu_workarounds.bf16_matmul_in_fp32() as active:
        assert not active
    monkeypatch.delenv(cpu_workarounds.MATMUL_ENV)
    monkeypatch.setattr(cpu_workarounds, "native_bf16_matmul", lambda: True)
    original = torch.matmul
    with cpu_workarounds.bf16_matmul_in_fp32() as active:
        assert not active and torch.matmul is original


def test_patch_is_undone_on_error(needs_patch: None) -> None:
    original = torch.nn.functional.linear
    with pytest.raises(RuntimeError), cpu_workarounds.bf16_matmul_in_fp32():
        raise RuntimeError("oneshot failed")
    assert torch.nn.functional.linear is original


def test_awq_grid_is_every_other_default_point_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmopt.quantize import recipes
    from vlmopt.quantize.errors import QuantizeInputError

    monkeypatch.delenv(recipes.AWQ_GRID_ENV, raising=False)
    monkeypatch.setattr(cpu_workarounds, "accelerator_available", lambda: False)
    assert recipes.awq_grid_points() == recipes.AWQ_GRID_CPU == 11
    monkeypatch.setattr(cpu_workarounds, "accelerator_available", lambda: True)
    assert recipes.awq_grid_points() == recipes.AWQ_GRID_DEFAULT == 20
    monkeypatch.setenv(recipes.AWQ_GRID_ENV, "8")
    assert recipes.awq_grid_points() == 8
    for bad in ("many", "1"):
        monkeypatch.setenv(recipes.AWQ_GRID_ENV, bad)
        with pytest.raises(QuantizeInputError, match=recipes.AWQ_GRID_ENV):
            recipes.awq_grid_points()
    # llm-compressor's grid with duo scaling: the identity, then ratios k / (n_grid - 2). 11 points are a subset of 20.
    from llmcompressor.modifiers.transform.awq import AWQModifier

    coarse = set(AWQModifier(n_grid=11)._get_grid_search_params())
    default = {(round(r, 9), duo) for r, duo in AWQModifier(n_grid=20)._get_grid_search_params()}
    assert len(coarse) == 11 and {(round(r, 9), duo) for r, duo in coarse} <= default


def test_one_thread_only_for_small_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_workarounds, "accelerator_available", lambda: False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256))
        large = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(1024, 1024))  # 2**20 weights
        with cpu_workarounds.one_thread_for_small_matrices(small) as active:
            assert active and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_workarounds.one_thread_for_small_matrices(large) as active:
            assert not active and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins
        with cpu_workarounds.one_thread_for_small_matrices(small) as active:
            assert not active and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
