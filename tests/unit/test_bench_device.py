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


# --- inside a pod: NVML as the NVIDIA container toolkit shows it (tests/unit/nvml_fake.py) ---------------------

def _pod_nvml(monkeypatch, instances, visible_env: dict[str, str]):
    import sys

    from tests.unit.nvml_fake import FakeGpu, h100_profiles, make_fake_pynvml

    h100 = FakeGpu("NVIDIA H100 80GB HBM3", 0x233010DE, 81559, 0, mig=(1, 1), profiles=h100_profiles(),
                   instances=instances)
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([h100]))
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in visible_env.items():
        monkeypatch.setenv(name, value)


def test_mig_slice_in_a_pod_without_cuda_visible_devices_is_recorded_as_the_slice(monkeypatch) -> None:
    """A pod given `nvidia.com/mig-3g.40gb: 1` has no CUDA_VISIBLE_DEVICES and NVML lists the parent GPU; only its
    own slice opens. The profile must name the slice, or the planner would file it under the whole H100."""
    from tests.unit.nvml_fake import FakeInstance
    from vlmopt.bench.device import detect_device

    others = FakeInstance("NVIDIA H100 80GB HBM3 MIG 2g.20gb", 3, 0, 20096, reachable=False)
    ours = FakeInstance("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 2, 4, 40448)
    _pod_nvml(monkeypatch, [others, ours], {"NVIDIA_VISIBLE_DEVICES": "all"})
    device = detect_device()
    assert (device.kind, device.name, device.mig_profile, device.catalog_id) == (
        "gpu", "NVIDIA H100 80GB HBM3", "3g.40gb", "h100-sxm-80gb")
    assert device.memory_gib == round(40448 / 1024, 1)
    assert device.slug() == "h100-sxm-80gb-mig-3g_40gb"


def test_mig_uuid_from_the_container_toolkit_names_the_slice(monkeypatch) -> None:
    from tests.unit.nvml_fake import FakeInstance
    from vlmopt.bench.device import detect_device

    _pod_nvml(monkeypatch, [FakeInstance("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9, 6, 9984),
                            FakeInstance("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 2, 4, 40448)],
              {"NVIDIA_VISIBLE_DEVICES": "MIG-0-1"})
    device = detect_device()
    assert (device.mig_profile, device.catalog_id, device.count) == ("3g.40gb", "h100-sxm-80gb", 1)


def test_whole_gpu_with_mig_off_stays_whole(monkeypatch) -> None:
    import sys

    from tests.unit.nvml_fake import FakeGpu, make_fake_pynvml
    from vlmopt.bench.device import detect_device

    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([FakeGpu("NVIDIA L4", 0x27B810DE, 23034, 0)]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-00000000")
    device = detect_device()
    assert (device.name, device.mig_profile, device.catalog_id) == ("NVIDIA L4", None, "l4-24gb")


def test_mig_device_name_as_nvml_reports_it_fills_the_profile() -> None:
    """Profiles written by other tools (or an older vlmopt) may carry the MIG device's own NVML name."""
    device = with_catalog_id(DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3 MIG 3g.40gb"))
    assert (device.catalog_id, device.mig_profile) == ("h100-sxm-80gb", "3g.40gb")
    media = with_catalog_id(DeviceInfo(kind="gpu", name="NVIDIA A100-SXM4-40GB MIG 1g.5gb+me"))
    assert (media.catalog_id, media.mig_profile) == ("a100-40gb", "1g.5gb+me")
