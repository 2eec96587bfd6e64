"""A measured profile names the catalog GPU it ran on, or the planner cannot use it for that GPU."""

from __future__ import annotations

from vlmopt.bench.device import with_catalog_id
from vlmopt.schemas import DeviceInfo


def test_gpu_and_mig_names_match_catalog_entries() -> None:
    assert with_catalog_id(DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3")).catalog_id == "h100-sxm-80gb"
    mig = with_catalog_id(DeviceInfo(kind="gpu", name="NVIDIA A100-SXM4-40GB", mig_profile="3g.20gb"))
    assert (mig.catalog_id, mig.mig_profile) == ("a100-40gb", "3g.20gb")


def test_cpu_and_unknown_gpu_stay_unmatched() -> None:
    assert with_catalog_id(DeviceInfo(kind="cpu", name="AMD EPYC")).catalog_id is None
    assert with_catalog_id(DeviceInfo(kind="gpu", name="Some Future GPU 9000")).catalog_id is None


def test_w4a16_needs_avx512_or_a_gpu(monkeypatch) -> None:
    from vlmopt.bench import support

    monkeypatch.setattr(support, "cpu_flags", lambda: {"sse4_2", "avx2"})
    reason = support.unservable_reason("W4A16_ASYM", gpu=False)
    assert reason is not None and "AVX-512 or a GPU" in reason
    assert support.unservable_reason("W8A8", gpu=False) is None
    assert support.unservable_reason("W4A16", gpu=True) is None
    monkeypatch.setattr(support, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert support.unservable_reason("W4A16", gpu=False) is None
